#!/usr/bin/env bash
# Creates (or reuses) k3s in Docker: network, server, agents; waits for every node; prints the kubeconfig.
# Environment: CLUSTER (name, prefix of every object), LABEL (name=value carried by every Docker object,
# so that k3s_docker_delete.sh finds them all), NODE_IMAGE, NODE_COUNT (a server and NODE_COUNT - 1 agents),
# K3S_FLAGS (the server's flags, separated by spaces), SHARED (1 to give every node the shared volume at
# SHARED_STORAGE_PATH; k3s_docker_shared_create.sh made it), AIRGAP_IMAGES (optional host directory of image archives every node imports),
# PULUMI_COMMAND_STDOUT (set by pulumi-command when create runs again on an update: the kubeconfig this
# command printed before, whose API port is taken again).
#
# What the stack's state and the nodes record is fixed at creation, so that it survives a restart of a node
# container, of Docker or of the host, as kind and k3d do:
# - the API's host port: a free loopback port chosen here and published as 127.0.0.1:<port>:6443, which
#   Docker binds again on every start (`127.0.0.1::6443` would get a new port each time and leave the
#   kubeconfig in the state pointing at a dead one); kind does the same
#   (sigs.k8s.io/kind pkg/cluster/internal/providers/common/getport.go);
# - each node's address: a static --ip on a network with a subnet of its own. k3s records its node IP at
#   first start and fails to start its networking when Docker hands out another (k3d-io/k3d#550, #1637);
# - the join token: in the containers' configuration, so a node started again keeps it; a cluster made
#   afresh gets new data volumes with its new token (k3s refuses a datastore made with another token,
#   k3s-io/k3s#4640).
set -euo pipefail
server="$CLUSTER-server"
nodes=("$server")
for ((index = 1; index < NODE_COUNT; index++)); do nodes+=("$CLUSTER-agent-$index"); done
read -ra server_flags <<<"$K3S_FLAGS"

# The API port in the kubeconfig this command printed before, if any.
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
  # Every node exists: start the stopped ones (nothing for running ones), with all they had.
  echo "k3s-in-Docker cluster $CLUSTER exists: reusing it" >&2
  docker start "${nodes[@]}" >/dev/null
else
  # Nodes missing (an earlier attempt failed, or nodes were removed behind the stack's back): start afresh,
  # their data volumes and network included. The shared checkpoint volume stays.
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
    # k3s imports every image archive in this directory when it starts (its air-gap mechanism).
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
