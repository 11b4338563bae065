#!/usr/bin/env bash
# Creates the k3s-in-Docker cluster's shared checkpoint volume $CLUSTER-shared, labelled LABEL (name=value),
# world-writable for the training pods (uid 1000). An existing volume is kept with everything on it: this
# command is not replaced by a resize, and runs again (an update) only when its inputs change.
# Environment: CLUSTER, LABEL, NODE_IMAGE (any image with /bin/sh: the node image, already pulled).
set -euo pipefail
volume="$CLUSTER-shared"
if ! docker volume inspect "$volume" >/dev/null 2>&1; then
  docker volume create --label "$LABEL" "$volume" >/dev/null
fi
docker run --rm --entrypoint /bin/sh -v "$volume:/shared" "$NODE_IMAGE" -c 'chmod 0777 /shared'
