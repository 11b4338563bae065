#!/usr/bin/env bash
# After kubeconfig.sh: every pod of DAEMONSETS in NAMESPACE Ready, three checks in a row, within TIMEOUT;
# the toolkit restarts containerd (and k3s with it), so a failed kubectl is a try, not an error.
set -euo pipefail
deadline=$(($(date +%s) + TIMEOUT))
read -ra names <<<"$DAEMONSETS"
steady=0
while [ "$steady" -lt 3 ]; do
  ready=1
  last=""
  for daemonset in "${names[@]}"; do
    # desired, ready and up-to-date pods; empty while the operator has not made it or the API is away.
    last="$(kubectl -n "$NAMESPACE" get daemonset "$daemonset" --ignore-not-found --request-timeout=10s \
      -o jsonpath='{.status.desiredNumberScheduled} {.status.numberReady} {.status.updatedNumberScheduled}' \
      2>/dev/null || true)"
    read -r desired pods updated <<<"$last" || true
    if [ -z "${desired:-}" ] || [ "$desired" -eq 0 ] || [ "${pods:-0}" -ne "$desired" ] ||
      [ "${updated:-0}" -ne "$desired" ]; then
      ready=0
      last="$daemonset: ${last:-not there yet} (desired ready updated)"
      break
    fi
  done
  if [ "$ready" = 1 ]; then steady=$((steady + 1)); else steady=0; fi
  if [ "$steady" -lt 3 ]; then
    if [ "$(date +%s)" -ge "$deadline" ]; then
      echo "GPU Operator not ready after ${TIMEOUT}s: $last; see kubectl -n $NAMESPACE get pods" >&2
      exit 1
    fi
    sleep 5
  fi
done
echo "GPU Operator is ready: the toolkit configured containerd and the validator passed"
