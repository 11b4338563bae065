#!/usr/bin/env bash
# Creates (or reuses) k3s in Docker and prints its kubeconfig. Environment: CLUSTER, LABEL (on every Docker
# object), NODE_IMAGE, NODE_COUNT (server + agents), K3S_FLAGS, SHARED (1: mount $CLUSTER-shared),
# AIRGAP_IMAGES (optional), PULUMI_COMMAND_STDOUT (the kubeconfig printed before, whose port is reused).
# Fixed at creation so a restart of a node, Docker or the host keeps the cluster (as kind and k3d do): the
# API's host port (`127.0.0.1::6443` would change it), each node's static IP (k3s keeps its first one,
# k3d-io/k3d#550) and the join token (k3s refuses a datastore made with another, k3s-io/k3s#4640).
# upstream: kubernetes-sigs/kind pkg/cluster/internal/providers/common/getport.go @ v0.29.0
set -euo pipefail
server="$CLUSTER-server"
nodes=("$server")
for ((index = 1; index < NODE_COUNT; index++)); do nodes+=("$CLUSTER-agent-$index"); done
read -ra server_flags <<<"$K3S_FLAGS"

previous_port() {
  sed -n 's#^ *server: https://127\.0\.0\.1:\([0-9][0-9]*\)$#\1#p' <<<"${PULUMI_COMMAND_STDOUT:-}" | head -n 1
}

# A loopback port in the dynamic range (49152-65535) that nothing listens on: a refused connection.
free_port() {
  local port
  for _ in {1..64}; do
    port=$((49152 + RANDOM % 16384))
    (: <"/dev/tcp/127.0.0.1/$port") 2>/dev/null || { echo "$port" && return; }
  done
  echo "k3s-in-Docker cluster $CLUSTER: no free loopback port for the API" >&2 && return 1
}

existing=$(docker ps -a --filter "label=$LABEL" --format '{{.Names}}' | sort)
if [ "$existing" = "$(printf '%s\n' "${nodes[@]}" | sort)" ]; then
  echo "k3s-in-Docker cluster $CLUSTER exists: reusing it" >&2
  docker start "${nodes[@]}" >/dev/null
else
  # Nodes missing: start afresh, data volumes and network included; the shared checkpoint volume stays.
  # Docker ids are single words: the unquoted lists below are split into them on purpose.
  # shellcheck disable=SC2086
  {
    leftovers=$(docker ps -aq --filter "label=$LABEL")
    if [ -n "$leftovers" ]; then docker rm -f -v $leftovers >/dev/null; fi
    volumes=$(docker volume ls -q --filter "label=$LABEL" | grep -vx "$CLUSTER-shared" || true)
    if [ -n "$volumes" ]; then docker volume rm $volumes >/dev/null; fi
    networks=$(docker network ls -q --filter "label=$LABEL")
    if [ -n "$networks" ]; then docker network rm $networks >/dev/null; fi
  }
  port=$(previous_port)
  if [ -z "$port" ]; then port=$(free_port); fi
  # A subnet Docker would hand out now, made the cluster network's own (static addresses need one).
  probe="$CLUSTER-subnet-probe"
  docker network create --label "$LABEL" "$probe" >/dev/null
  subnet=$(docker network inspect --format '{{(index .IPAM.Config 0).Subnet}}' "$probe")
  docker network rm "$probe" >/dev/null
  if ! [[ $subnet =~ ^([0-9]+\.[0-9]+\.[0-9]+)\.([0-9]+)/([0-9]+)$ ]] || ((BASH_REMATCH[3] > 24)); then
    echo "k3s-in-Docker cluster $CLUSTER: Docker offers the subnet '$subnet'; an IPv4 /24 or larger is needed" >&2
    exit 1
  fi
  prefix=${BASH_REMATCH[1]} first=$((BASH_REMATCH[2] + 2)) # .1 is the gateway
  if ((first + NODE_COUNT > 255)); then
    echo "k3s-in-Docker cluster $CLUSTER: $NODE_COUNT nodes do not fit in $subnet from $prefix.$first" >&2
    exit 1
  fi
  docker network create --label "$LABEL" --subnet "$subnet" "$CLUSTER" >/dev/null
  token=$(od -An -N24 -tx1 /dev/urandom | tr -d ' \n')
  run_node() {
    local name=$1 address=$2
    shift 2
    docker volume create --label "$LABEL" "$name-data" >/dev/null
    local mounts=(-v "$name-data:/var/lib/rancher/k3s")
    if [ -n "${AIRGAP_IMAGES:-}" ]; then mounts+=(-v "$AIRGAP_IMAGES:/var/lib/rancher/k3s/agent/images:ro"); fi
    if [ "$SHARED" = 1 ]; then mounts+=(-v "$CLUSTER-shared:$SHARED_STORAGE_PATH"); fi
    docker run -d --name "$name" --hostname "$name" --label "$LABEL" --network "$CLUSTER" --ip "$address" \
      --privileged --restart unless-stopped --tmpfs /run --tmpfs /var/run "${mounts[@]}" \
      -e K3S_TOKEN="$token" "$@" >/dev/null
  }
  run_node "$server" "$prefix.$first" -p "127.0.0.1:$port:6443" "$NODE_IMAGE" server "${server_flags[@]}"
  for ((index = 1; index < NODE_COUNT; index++)); do
    run_node "${nodes[index]}" "$prefix.$((first + index))" -e K3S_URL="https://$server:6443" "$NODE_IMAGE" agent
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
