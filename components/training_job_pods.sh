#!/usr/bin/env bash
# Lists the TrainJob's pods once the controllers have created them (they may still be Pending), with a
# bounded wait: a slow start leaves podNames short instead of failing the deployment. A checkpoint claim
# that does not bind in that time fails it: the pods could never start, and `up` must not look done.
# components/training_job.py runs it after kubeconfig.sh; prints one pod name a line, sorted.
# Environment: NAMESPACE; SELECTOR, the pods' label selector; WANT, how many pods to wait for; CLAIM, the
# checkpoint PersistentVolumeClaim; TIMEOUT, seconds; KUBECONFIG, as kubectl reads it.
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
