#!/bin/bash
# Copies every node's daemon logs (etcd, control plane, containerd, kubelet, kube-proxy) and the container's
# own output into DEST/<node>/, for a failed end-to-end run. Usage: logs.sh DEST
set -euo pipefail
CLUSTER=${E2E_CLUSTER:-trainstack-e2e}
dest=${1:?usage: logs.sh DEST}
mkdir -p "$dest"
for container in $(docker ps -a --filter "label=dev.trainstack.e2e-cluster=$CLUSTER" --format '{{.Names}}'); do
    mkdir -p "$dest/$container"
    docker logs "$container" >"$dest/$container/container.log" 2>&1 || true
    docker cp "$container:/var/log/trainstack-e2e/." "$dest/$container/" 2>/dev/null || true
done
echo "node logs in $dest"
