#!/usr/bin/env bash
# Makes the host directory $SHARED_DIR that every kind training node mounts as the shared checkpoint storage,
# world-writable for the training pods (uid 1000). What it holds stays: this command is not replaced by a
# change of the cluster's config, and runs again (an update) only when its inputs change.
set -euo pipefail
mkdir -p "$SHARED_DIR"
chmod 0777 "$SHARED_DIR"
