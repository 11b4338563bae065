# shellcheck shell=bash
# Loads the image archive ARCHIVE (trainer_image_archive.sh, put first) into the nodes of the kind cluster
# KIND_CLUSTER that run training: the workers, or the lone control plane of a 1-node cluster (the only one kind
# leaves schedulable; upstream: kubernetes-sigs/kind pkg/cluster/internal/create/actions/kubeadminit/init.go @
# v0.29.0). Each node keeps a copy of several GB. An archive, because `kind load docker-image` fails with
# Docker's containerd image store (kubernetes-sigs/kind#3795).
workers=$(kind get nodes --name "$KIND_CLUSTER" | { grep -v -- '-control-plane[0-9]*$' || true; } | paste -sd, -)
kind load image-archive "$ARCHIVE" --name "$KIND_CLUSTER" ${workers:+--nodes "$workers"} >&2
