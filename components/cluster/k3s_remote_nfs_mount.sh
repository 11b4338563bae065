#!/bin/sh
# On an agent: NFS_SERVER's export at SHARED_STORAGE_PATH, now and at boot. POSIX sh; root.sh and
# k3s_remote_nfs_lib.sh first.
set -eu
require_root "mounting the NFS checkpoint storage"
apt_install nfs-common
as_root install -d "$SHARED_STORAGE_PATH"
replace_line "\\#[[:space:]]${SHARED_STORAGE_PATH}[[:space:]]#d" \
  "$NFS_SERVER:$SHARED_STORAGE_PATH $SHARED_STORAGE_PATH nfs defaults,_netdev 0 0" /etc/fstab
mountpoint -q "$SHARED_STORAGE_PATH" || as_root mount "$SHARED_STORAGE_PATH"
