# shellcheck shell=bash
# Imports the image archive ARCHIVE (trainer_image_archive.sh, put first) into the containerd of every
# running node container of a k3s-in-Docker cluster: those labelled CLUSTER_LABEL=CLUSTER.
nodes=$(docker ps -q --filter "label=$CLUSTER_LABEL=$CLUSTER")
if [ -z "$nodes" ]; then
  echo "no running node of the k3s-in-Docker cluster $CLUSTER" >&2
  exit 1
fi
for node in $nodes; do
  docker exec -i "$node" k3s ctr -n k8s.io images import - <"$ARCHIVE" >&2
done
