#!/bin/sh
# On the k3s server: SHARED_STORAGE_PATH, world-writable (the training pods run as uid 1000), exported over
# NFS to the agents. Debian/Ubuntu. POSIX sh; needs components/root.sh and k3s_remote_nfs_lib.sh first.
# Environment: SHARED_STORAGE_PATH; NFS_CLIENTS, the agents' addresses separated by spaces.
set -eu
require_root "sharing checkpoint storage over NFS"
apt_install nfs-kernel-server
as_root install -d -m 0777 "$SHARED_STORAGE_PATH"
exports="$SHARED_STORAGE_PATH"
for client in $NFS_CLIENTS; do exports="$exports $client(rw,sync,no_subtree_check)"; done
replace_line "\\#^$SHARED_STORAGE_PATH #d" "$exports" /etc/exports
as_root exportfs -ra
