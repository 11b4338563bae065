#!/bin/sh
# On the k3s server: stop exporting SHARED_STORAGE_PATH; its checkpoints stay. POSIX sh; root.sh and
# k3s_remote_nfs_lib.sh first.
set -eu
require_root "unexporting the NFS checkpoint storage"
as_root sed -i "\\#^$SHARED_STORAGE_PATH #d" /etc/exports
as_root exportfs -ra || true
