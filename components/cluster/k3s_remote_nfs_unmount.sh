#!/bin/sh
# On an agent, at destroy: unmount the shared storage and forget it.
# POSIX sh; needs components/root.sh and k3s_remote_nfs_lib.sh first. Environment: SHARED_STORAGE_PATH.
set -eu
require_root "unmounting the NFS checkpoint storage"
if mountpoint -q "$SHARED_STORAGE_PATH"; then as_root umount -l "$SHARED_STORAGE_PATH"; fi
as_root sed -i "\\#[[:space:]]${SHARED_STORAGE_PATH}[[:space:]]#d" /etc/fstab
