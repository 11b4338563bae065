#!/usr/bin/env bash
# The host directory $SHARED_DIR every kind node mounts, world-writable (uid 1000); never replaced.
set -euo pipefail
mkdir -p "$SHARED_DIR"
chmod 0777 "$SHARED_DIR"
