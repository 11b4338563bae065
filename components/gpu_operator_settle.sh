#!/usr/bin/env bash
# Delete, after the operator's release and kubeconfig.sh: waits until no TOOLKIT_DAEMONSET pod is left
# (they undo their containerd config and restart it) and the API answered three times in a row.
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
