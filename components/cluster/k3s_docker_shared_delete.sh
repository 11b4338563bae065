#!/usr/bin/env bash
# At `pulumi destroy` only (never replaced): removes the shared volume $CLUSTER-shared. Environment: CLUSTER.
set -euo pipefail
if docker volume inspect "$CLUSTER-shared" >/dev/null 2>&1; then
  docker volume rm "$CLUSTER-shared" >/dev/null
fi
