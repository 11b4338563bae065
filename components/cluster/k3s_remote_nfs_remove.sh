#!/bin/sh
# On the k3s server, at `pulumi destroy` only (the command that runs it is never replaced): removes
# SHARED_STORAGE_PATH, checkpoints included, after its export is gone.
# POSIX sh; needs components/root.sh first. Environment: SHARED_STORAGE_PATH.
set -eu
require_root "removing the checkpoint storage"
as_root rm -rf "$SHARED_STORAGE_PATH"
