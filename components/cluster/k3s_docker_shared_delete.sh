#!/usr/bin/env bash
# At `pulumi destroy` only (the command that runs it is never replaced): removes the shared checkpoint volume
# $CLUSTER-shared, after the node containers that mounted it are gone. Environment: CLUSTER.
set -euo pipefail
if docker volume inspect "$CLUSTER-shared" >/dev/null 2>&1; then
  docker volume rm "$CLUSTER-shared" >/dev/null
fi
