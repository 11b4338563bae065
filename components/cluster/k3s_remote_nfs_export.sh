#!/bin/sh
# On the k3s server: SHARED_STORAGE_PATH (k3s_remote_nfs_shared.sh made it) exported over NFS to the agents.
# A new list of agents replaces the command: k3s_remote_nfs_unexport.sh drops the old line, this writes the new.
# Debian/Ubuntu. POSIX sh; needs components/root.sh and k3s_remote_nfs_lib.sh first.
# Environment: SHARED_STORAGE_PATH; NFS_CLIENTS, the agents' addresses separated by spaces (at least one).
set -eu
require_root "sharing checkpoint storage over NFS"
apt_install nfs-kernel-server
exports="$SHARED_STORAGE_PATH"
for client in $NFS_CLIENTS; do exports="$exports $client(rw,sync,no_subtree_check)"; done
replace_line "\\#^$SHARED_STORAGE_PATH #d" "$exports" /etc/exports
as_root exportfs -ra
