#!/usr/bin/env bash
# At `pulumi destroy` only (the command that runs it is never replaced): removes the shared checkpoint
# directory $SHARED_DIR, after the kind cluster that mounted it is gone.
set -euo pipefail
rm -rf "$SHARED_DIR"
