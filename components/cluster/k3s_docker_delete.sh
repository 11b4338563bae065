#!/usr/bin/env bash
# Removes every Docker object labelled LABEL but the shared volume $CLUSTER-shared: it runs before a resize
# too, which must keep the checkpoints (k3s_docker_shared_delete.sh, at destroy only). Environment: CLUSTER, LABEL.
set -euo pipefail
# Docker ids are single words: the unquoted lists below are split into them on purpose.
# shellcheck disable=SC2086
{
  containers=$(docker ps -aq --filter "label=$LABEL")
  if [ -n "$containers" ]; then docker rm -f -v $containers >/dev/null; fi
  volumes=$(docker volume ls -q --filter "label=$LABEL" | grep -vx "$CLUSTER-shared" || true)
  if [ -n "$volumes" ]; then docker volume rm $volumes >/dev/null; fi
  networks=$(docker network ls -q --filter "label=$LABEL")
  if [ -n "$networks" ]; then docker network rm $networks >/dev/null; fi
}
