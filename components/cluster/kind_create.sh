#!/usr/bin/env bash
# Creates (or reuses) the kind cluster $KIND_CLUSTER from the config on stdin and prints its kubeconfig.
# GPU_PASSTHROUGH=1 checks the host's nvkind settings first.
set -euo pipefail
if [ "${GPU_PASSTHROUGH:-0}" = 1 ]; then
  # Fail with the fix instead of creating a cluster that silently has no GPU.
  if [ "$(docker info --format '{{.DefaultRuntime}}')" != nvidia ]; then
    echo "GPU passthrough to kind needs Docker's default runtime to be nvidia:" \
      "sudo nvidia-ctk runtime configure --runtime=docker --set-as-default && sudo systemctl restart docker" >&2
    exit 1
  fi
  if ! grep -Eq '^[[:space:]]*accept-nvidia-visible-devices-as-volume-mounts[[:space:]]*=[[:space:]]*true' \
    /etc/nvidia-container-runtime/config.toml; then
    echo "GPU passthrough to kind needs" \
      "sudo nvidia-ctk config --set accept-nvidia-visible-devices-as-volume-mounts=true --in-place" >&2
    exit 1
  fi
fi
if kind get clusters 2>/dev/null | grep -qx "$KIND_CLUSTER"; then
  echo "kind cluster $KIND_CLUSTER exists: reusing it" >&2
else
  # Not into the user's KUBECONFIG (admin credentials): a private file, removed; the stack's is printed below.
  umask 077
  merged=$(mktemp)
  trap 'rm -f "$merged"' EXIT
  kind create cluster --name "$KIND_CLUSTER" --config /dev/stdin --wait 180s --kubeconfig "$merged" >&2
fi
kind get kubeconfig --name "$KIND_CLUSTER"
