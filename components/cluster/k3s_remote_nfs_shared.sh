#!/bin/sh
# On the k3s server: SHARED_STORAGE_PATH, world-writable (the training pods run as uid 1000). What it holds
# stays: this command is not replaced when agents come or go (their export is another command).
# POSIX sh; needs components/root.sh first. Environment: SHARED_STORAGE_PATH.
set -eu
require_root "making the checkpoint storage"
as_root install -d -m 0777 "$SHARED_STORAGE_PATH"
