#!/usr/bin/env bash
# Run at destroy after the GPU Operator's release is gone (components/gpu_operator.py, after kubeconfig.sh):
# the toolkit's pods undo their containerd config on the way out and restart containerd (and k3s with it).
# Waits until no toolkit pod is left and the API server answered three checks in a row, so that what is
# deleted next (the namespace, the cluster) does not meet the restart.
# Environment: NAMESPACE, the operator's; TOOLKIT_DAEMONSET, the toolkit's DaemonSet (its pods' app label);
# TIMEOUT, seconds; KUBECONFIG, as kubectl reads it.
set -euo pipefail
deadline=$(($(date +%s) + TIMEOUT))
steady=0
while [ "$steady" -lt 3 ]; do
  if pods="$(kubectl -n "$NAMESPACE" get pods -l "app=$TOOLKIT_DAEMONSET" -o name --request-timeout=10s 2>/dev/null)" &&
    [ -z "$pods" ] && kubectl get --raw /readyz --request-timeout=10s >/dev/null 2>&1; then
    steady=$((steady + 1))
  else
    steady=0
  fi
  if [ "$steady" -lt 3 ]; then
    if [ "$(date +%s)" -ge "$deadline" ]; then
      echo "the GPU Operator's toolkit pods are not gone, or the API server not steady, after ${TIMEOUT}s;" \
        "see kubectl -n $NAMESPACE get pods, then run pulumi destroy again" >&2
      exit 1
    fi
    sleep 5
  fi
done
