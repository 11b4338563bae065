#!/usr/bin/env bash
# The shared checkpoint volume $CLUSTER-shared, world-writable for uid 1000; an existing one is kept (never
# replaced by a resize). Environment: CLUSTER, LABEL, NODE_IMAGE (any image with /bin/sh).
set -euo pipefail
volume="$CLUSTER-shared"
if ! docker volume inspect "$volume" >/dev/null 2>&1; then
  docker volume create --label "$LABEL" "$volume" >/dev/null
fi
docker run --rm --entrypoint /bin/sh -v "$volume:/shared" "$NODE_IMAGE" -c 'chmod 0777 /shared'
