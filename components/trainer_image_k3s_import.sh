#!/usr/bin/env bash
# Streams the local image IMAGE into a k3s node's containerd: NODE_IMPORT (root.sh and
# trainer_image_k3s_node_import.sh) reads the archive on stdin, on this machine, or, when SSH_HOST is set,
# on SSH_HOST as SSH_USER over SSH (port SSH_PORT, private key file SSH_KEY).
set -euo pipefail
if [ -z "${SSH_HOST:-}" ]; then
  docker save "$IMAGE" | sh -c "$NODE_IMPORT"
else
  docker save "$IMAGE" |
    ssh -o BatchMode=yes -o StrictHostKeyChecking=accept-new -i "${SSH_KEY:?}" -p "${SSH_PORT:?}" \
      "${SSH_USER:?}@$SSH_HOST" "$NODE_IMPORT"
fi
