#!/usr/bin/env bash
# Prints the TrainJob's pod names (SELECTOR in NAMESPACE), waiting up to TIMEOUT for WANT of them (then a
# warning); fails if the claim CLAIM is not bound by then, as no pod could ever start.
set -euo pipefail
deadline=$(($(date +%s) + TIMEOUT))
while :; do
  pods="$(kubectl get pods -n "$NAMESPACE" -l "$SELECTOR" -o jsonpath='{.items[*].metadata.name}' 2>/dev/null || true)"
  count=$(wc -w <<<"$pods")
  if [ "$count" -ge "$WANT" ]; then break; fi
  if [ "$(date +%s)" -ge "$deadline" ]; then
    echo "warning: $count of $WANT pods of the TrainJob exist after ${TIMEOUT}s" >&2
    break
  fi
  sleep 3
done
until [ "$(kubectl get pvc -n "$NAMESPACE" "$CLAIM" -o jsonpath='{.status.phase}')" = Bound ]; do
  if [ "$(date +%s)" -ge "$deadline" ]; then
    echo "the checkpoint claim $NAMESPACE/$CLAIM is not bound after ${TIMEOUT}s, so no training pod can start:" >&2
    kubectl describe pvc -n "$NAMESPACE" "$CLAIM" | tail -n 15 >&2
    exit 1
  fi
  sleep 3
done
read -ra names <<<"$pods"
printf '%s\n' "${names[@]}" | sort
