#!/bin/sh
# On the k3s server: SHARED_STORAGE_PATH exported over NFS to NFS_CLIENTS (the agents, space-separated).
# POSIX sh; root.sh and k3s_remote_nfs_lib.sh first.
set -eu
require_root "sharing checkpoint storage over NFS"
apt_install nfs-kernel-server
exports="$SHARED_STORAGE_PATH"
for client in $NFS_CLIENTS; do exports="$exports $client(rw,sync,no_subtree_check)"; done
replace_line "\\#^$SHARED_STORAGE_PATH #d" "$exports" /etc/exports
as_root exportfs -ra
