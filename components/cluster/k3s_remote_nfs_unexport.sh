#!/bin/sh
# On the k3s server, at destroy: stop exporting SHARED_STORAGE_PATH and remove it, checkpoints included.
# POSIX sh; needs components/root.sh and k3s_remote_nfs_lib.sh first. Environment: SHARED_STORAGE_PATH.
set -eu
require_root "removing the NFS checkpoint storage"
as_root sed -i "\\#^$SHARED_STORAGE_PATH #d" /etc/exports
as_root exportfs -ra || true
as_root rm -rf "$SHARED_STORAGE_PATH"
