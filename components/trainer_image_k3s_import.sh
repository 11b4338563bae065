#!/usr/bin/env bash
# Streams IMAGE to NODE_IMPORT here, or over SSH on SSH_HOST (SSH_USER, SSH_PORT, SSH_KEY).
set -euo pipefail
if [ -z "${SSH_HOST:-}" ]; then
  docker save "$IMAGE" | sh -c "$NODE_IMPORT"
else
  docker save "$IMAGE" |
    ssh -o BatchMode=yes -o StrictHostKeyChecking=accept-new -i "${SSH_KEY:?}" -p "${SSH_PORT:?}" \
      "${SSH_USER:?}@$SSH_HOST" "$NODE_IMPORT"
fi
