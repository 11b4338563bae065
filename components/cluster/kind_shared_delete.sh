#!/usr/bin/env bash
# At `pulumi destroy` only (never replaced): removes the shared checkpoint directory $SHARED_DIR.
set -euo pipefail
rm -rf "$SHARED_DIR"
