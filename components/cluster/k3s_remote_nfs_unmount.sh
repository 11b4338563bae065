#!/bin/sh
# On an agent, at destroy: unmount SHARED_STORAGE_PATH and forget it. POSIX sh; root.sh first.
set -eu
require_root "unmounting the NFS checkpoint storage"
if mountpoint -q "$SHARED_STORAGE_PATH"; then as_root umount -l "$SHARED_STORAGE_PATH"; fi
as_root sed -i "\\#[[:space:]]${SHARED_STORAGE_PATH}[[:space:]]#d" /etc/fstab
