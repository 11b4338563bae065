# shellcheck shell=bash
# Imports ARCHIVE into every running node container labelled CLUSTER_LABEL=CLUSTER.
nodes=$(docker ps -q --filter "label=$CLUSTER_LABEL=$CLUSTER")
if [ -z "$nodes" ]; then
  echo "no running node of the k3s-in-Docker cluster $CLUSTER" >&2
  exit 1
fi
for node in $nodes; do
  docker exec -i "$node" k3s ctr -n k8s.io images import - <"$ARCHIVE" >&2
done
