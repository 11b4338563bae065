#!/bin/sh
# On the k3s server, at destroy or when the server moves: stop exporting SHARED_STORAGE_PATH. The directory
# and its checkpoints stay (k3s_remote_nfs_remove.sh removes them at destroy).
# POSIX sh; needs components/root.sh and k3s_remote_nfs_lib.sh first. Environment: SHARED_STORAGE_PATH.
set -eu
require_root "unexporting the NFS checkpoint storage"
as_root sed -i "\\#^$SHARED_STORAGE_PATH #d" /etc/exports
as_root exportfs -ra || true
