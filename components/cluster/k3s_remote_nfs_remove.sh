#!/bin/sh
# On the k3s server, at `pulumi destroy` only (never replaced): removes SHARED_STORAGE_PATH, checkpoints
# included. POSIX sh; root.sh first.
set -eu
require_root "removing the checkpoint storage"
as_root rm -rf "$SHARED_STORAGE_PATH"
