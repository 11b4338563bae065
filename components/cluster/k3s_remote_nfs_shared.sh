#!/bin/sh
# On the k3s server: SHARED_STORAGE_PATH, world-writable (uid 1000); kept when agents come or go.
# POSIX sh; root.sh first.
set -eu
require_root "making the checkpoint storage"
as_root install -d -m 0777 "$SHARED_STORAGE_PATH"
