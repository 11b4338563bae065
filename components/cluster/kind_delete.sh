#!/usr/bin/env bash
# Deletes the kind cluster $KIND_CLUSTER. It runs at destroy and before a replacement (any change of the
# config, a resize included), which must keep the checkpoints: the shared directory is kind_shared_delete.sh's,
# run at destroy only. kind_create.sh kept the credentials out of the user's kubeconfig, so kind has none
# to remove there: it gets a private file of its own instead of the KUBECONFIG the user's shell names.
# Then the Docker network kind puts nodes on, once no container is left on it (kind never removes it:
# upstream: kubernetes-sigs/kind pkg/cluster/internal/providers/docker/network.go @ v0.29.0).
set -euo pipefail
merged=$(mktemp)
trap 'rm -f "$merged"' EXIT
kind delete cluster --name "$KIND_CLUSTER" --kubeconfig "$merged"
network=${KIND_EXPERIMENTAL_DOCKER_NETWORK:-kind}
if [ "$(docker network inspect --format '{{len .Containers}}' "$network" 2>/dev/null)" = 0 ]; then
  docker network rm "$network" >/dev/null || echo "kept the Docker network $network (in use again?)" >&2
fi
