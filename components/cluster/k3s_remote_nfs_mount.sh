#!/bin/sh
# On an agent: the server's NFS export mounted at SHARED_STORAGE_PATH, now and at boot. Debian/Ubuntu.
# POSIX sh; needs components/root.sh and k3s_remote_nfs_lib.sh first. Environment: SHARED_STORAGE_PATH; NFS_SERVER, the server's address.
set -eu
require_root "mounting the NFS checkpoint storage"
apt_install nfs-common
as_root install -d "$SHARED_STORAGE_PATH"
replace_line "\\#[[:space:]]${SHARED_STORAGE_PATH}[[:space:]]#d" \
  "$NFS_SERVER:$SHARED_STORAGE_PATH $SHARED_STORAGE_PATH nfs defaults,_netdev 0 0" /etc/fstab
mountpoint -q "$SHARED_STORAGE_PATH" || as_root mount "$SHARED_STORAGE_PATH"
