#!/usr/bin/env bash
# Deletes the kind cluster $KIND_CLUSTER. It runs at destroy and before a replacement (any change of the
# config, a resize included), which must keep the checkpoints: the shared directory is kind_shared_delete.sh's,
# run at destroy only. kind_create.sh kept the credentials out of the user's kubeconfig, so kind has none
# to remove there: it gets a private file of its own instead of the KUBECONFIG the user's shell names.
set -euo pipefail
merged=$(mktemp)
trap 'rm -f "$merged"' EXIT
kind delete cluster --name "$KIND_CLUSTER" --kubeconfig "$merged"
