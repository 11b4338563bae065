#!/usr/bin/env bash
# Deletes the kind cluster $KIND_CLUSTER, then the Docker network kind puts every cluster's nodes on once no
# container is left on it (kind creates it when absent and never removes it: sigs.k8s.io/kind
# pkg/cluster/internal/providers/docker/network.go @ v0.29.0), and the directory its nodes shared ($SHARED_DIR,
# when set). A network another cluster or container still uses stays.
kind delete cluster --name "$KIND_CLUSTER"
network=${KIND_EXPERIMENTAL_DOCKER_NETWORK:-kind}
if [ "$(docker network inspect --format '{{len .Containers}}' "$network" 2>/dev/null)" = 0 ]; then
  docker network rm "$network" >/dev/null || echo "kept the Docker network $network (in use again?)" >&2
fi
if [ -n "${SHARED_DIR:-}" ]; then rm -rf "$SHARED_DIR"; fi
