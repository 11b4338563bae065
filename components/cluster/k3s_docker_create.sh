#!/usr/bin/env bash
# Creates (or reuses) k3s in Docker: network, server, agents; waits for every node; prints the kubeconfig.
# Environment: CLUSTER (name, prefix of every object), LABEL (name=value carried by every Docker object,
# so that k3s_docker_delete.sh finds them all), NODE_IMAGE, NODE_COUNT (a server and NODE_COUNT - 1 agents),
# K3S_FLAGS (the server's flags, separated by spaces), SHARED (1 to give every node the shared volume at
# SHARED_STORAGE_PATH), AIRGAP_IMAGES (optional host directory of image archives every node imports).
# The API is published on a free loopback port of this machine; the kubeconfig points there.
set -euo pipefail
server="$CLUSTER-server"
nodes=("$server")
for ((index = 1; index < NODE_COUNT; index++)); do nodes+=("$CLUSTER-agent-$index"); done
read -ra server_flags <<<"$K3S_FLAGS"
running=$(docker ps -q --filter "label=$LABEL" --filter status=running | wc -l)
if [ "$running" -eq "${#nodes[@]}" ]; then
  echo "k3s-in-Docker cluster $CLUSTER exists: reusing it" >&2
else
  # Leftovers of an earlier, incomplete attempt (or nodes removed behind the stack's back): start afresh.
  leftovers=$(docker ps -aq --filter "label=$LABEL")
  # Docker ids are single words: split the list into them.
  # shellcheck disable=SC2086
  if [ -n "$leftovers" ]; then docker rm -f -v $leftovers >/dev/null; fi
  docker network inspect "$CLUSTER" >/dev/null 2>&1 || docker network create --label "$LABEL" "$CLUSTER" >/dev/null
  token=$(od -An -N24 -tx1 /dev/urandom | tr -d ' \n')
  run_node() {
    local name=$1
    shift
    docker volume create --label "$LABEL" "$name-data" >/dev/null
    local mounts=(-v "$name-data:/var/lib/rancher/k3s")
    # k3s imports every image archive in this directory when it starts (its air-gap mechanism).
    if [ -n "${AIRGAP_IMAGES:-}" ]; then mounts+=(-v "$AIRGAP_IMAGES:/var/lib/rancher/k3s/agent/images:ro"); fi
    if [ "$SHARED" = 1 ]; then mounts+=(-v "$CLUSTER-shared:$SHARED_STORAGE_PATH"); fi
    docker run -d --name "$name" --hostname "$name" --label "$LABEL" --network "$CLUSTER" \
      --privileged --restart unless-stopped --tmpfs /run --tmpfs /var/run "${mounts[@]}" \
      -e K3S_TOKEN="$token" "$@" >/dev/null
  }
  if [ "$SHARED" = 1 ]; then
    docker volume create --label "$LABEL" "$CLUSTER-shared" >/dev/null
    # The training pods run as uid 1000: the shared root must be writable for them.
    docker run --rm --entrypoint /bin/sh -v "$CLUSTER-shared:/shared" "$NODE_IMAGE" -c 'chmod 0777 /shared'
  fi
  run_node "$server" -p 127.0.0.1::6443 "$NODE_IMAGE" server "${server_flags[@]}"
  for agent in "${nodes[@]:1}"; do
    run_node "$agent" -e K3S_URL="https://$server:6443" "$NODE_IMAGE" agent
  done
fi
deadline=$(($(date +%s) + 300))
until [ "$(docker exec "$server" kubectl get nodes --no-headers 2>/dev/null | grep -cw Ready)" -ge "${#nodes[@]}" ]; do
  if [ "$(date +%s)" -ge "$deadline" ]; then
    echo "k3s-in-Docker cluster $CLUSTER: not all ${#nodes[@]} nodes are Ready after 300s:" >&2
    docker exec "$server" kubectl get nodes >&2 || docker logs --tail 30 "$server" >&2
    exit 1
  fi
  sleep 2
done
address=$(docker port "$server" 6443/tcp | head -n 1)
docker exec "$server" cat /etc/rancher/k3s/k3s.yaml | sed "s#https://127.0.0.1:6443#https://$address#"
