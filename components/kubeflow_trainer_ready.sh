#!/usr/bin/env bash
# The Kubeflow Trainer readiness gate (components/kubeflow_trainer.py runs it after kubeconfig.sh): the
# controllers' Deployments are Available and every admission webhook that exists has a CA bundle (the
# controllers inject it after start-up). Only then is a TrainJob admitted and reconciled.
# Environment: NAMESPACE, the release's namespace; WEBHOOKS, the webhook configurations to wait for
# (kind/name, space-separated); KUBECONFIG, as kubectl reads it.
set -euo pipefail
kubectl -n "$NAMESPACE" wait deployment --all --for=condition=Available --timeout=600s
deadline=$(($(date +%s) + 300))
read -ra configurations <<<"$WEBHOOKS"
for webhook in "${configurations[@]}"; do
  kubectl get "$webhook" --ignore-not-found -o name | grep -q . || continue
  until [ -n "$(kubectl get "$webhook" -o jsonpath='{.webhooks[0].clientConfig.caBundle}')" ]; do
    if [ "$(date +%s)" -ge "$deadline" ]; then
      echo "$webhook has no CA bundle after 300s" >&2
      exit 1
    fi
    sleep 3
  done
done
echo "Kubeflow Trainer is ready"
