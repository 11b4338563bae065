#!/usr/bin/env bash
# Deletes the kind cluster $KIND_CLUSTER (at destroy and before a resize: the shared directory stays, it is
# kind_shared_delete.sh's), then kind's Docker network once empty (kind never removes it).
# upstream: kubernetes-sigs/kind pkg/cluster/internal/providers/docker/network.go @ v0.29.0
set -euo pipefail
merged=$(mktemp)
trap 'rm -f "$merged"' EXIT
kind delete cluster --name "$KIND_CLUSTER" --kubeconfig "$merged"
network=${KIND_EXPERIMENTAL_DOCKER_NETWORK:-kind}
if [ "$(docker network inspect --format '{{len .Containers}}' "$network" 2>/dev/null)" = 0 ]; then
  docker network rm "$network" >/dev/null || echo "kept the Docker network $network (in use again?)" >&2
fi
