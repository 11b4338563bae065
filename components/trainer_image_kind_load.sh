# shellcheck shell=bash
# Loads ARCHIVE into the kind nodes that train: the workers, or a lone control plane. An archive, as
# `kind load docker-image` fails with Docker's containerd image store (kubernetes-sigs/kind#3795).
workers=$(kind get nodes --name "$KIND_CLUSTER" | { grep -v -- '-control-plane[0-9]*$' || true; } | paste -sd, -)
kind load image-archive "$ARCHIVE" --name "$KIND_CLUSTER" ${workers:+--nodes "$workers"} >&2
