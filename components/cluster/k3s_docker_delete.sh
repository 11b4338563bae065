#!/usr/bin/env bash
# Removes every container (with its anonymous volumes), volume and network of the k3s-in-Docker cluster:
# the Docker objects that carry LABEL (name=value), except the shared checkpoint volume $CLUSTER-shared. It
# runs at destroy and before a replacement (a resize), which must keep the checkpoints: that volume is
# k3s_docker_shared_delete.sh's, run at destroy only. Environment: CLUSTER, LABEL.
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
