#!/usr/bin/env bash
# The Kubeflow Trainer readiness gate (after kubeconfig.sh): Deployments Available, every webhook with a CA
# bundle, and every webhook Service with a ready endpoint (without one, admission fails under failurePolicy Fail).
# Environment: NAMESPACE, the release's namespace; WEBHOOKS, the webhook configurations to wait for
# (kind/name, space-separated); KUBECONFIG, as kubectl reads it.
set -euo pipefail
kubectl -n "$NAMESPACE" wait deployment --all --for=condition=Available --timeout=600s
deadline=$(($(date +%s) + 300))
# wait_for WHAT COMMAND...: runs COMMAND until it prints something, failing after the deadline.
wait_for() {
  local what=$1
  shift
  until [ -n "$("$@")" ]; do
    if [ "$(date +%s)" -ge "$deadline" ]; then
      echo "$what after 300s" >&2
      exit 1
    fi
    sleep 3
  done
}
read -ra configurations <<<"$WEBHOOKS"
services=()
for webhook in "${configurations[@]}"; do
  kubectl get "$webhook" --ignore-not-found -o name | grep -q . || continue
  wait_for "$webhook has no CA bundle" kubectl get "$webhook" -o jsonpath='{.webhooks[0].clientConfig.caBundle}'
  # namespace/name of every Service its webhooks call (a webhook may name a URL instead: nothing to wait for).
  range='{range .webhooks[*]}{.clientConfig.service.namespace}/{.clientConfig.service.name}{"\n"}{end}'
  while read -r service; do
    if [ "$service" != / ]; then services+=("$service"); fi
  done < <(kubectl get "$webhook" -o jsonpath="$range" | sort -u)
done
ready='{range .items[*].endpoints[?(@.conditions.ready==true)]}{.addresses[0]}{"\n"}{end}'
for service in $(printf '%s\n' "${services[@]}" | sort -u); do
  wait_for "the webhook Service $service has no ready endpoint" \
    kubectl -n "${service%%/*}" get endpointslices -l "kubernetes.io/service-name=${service#*/}" -o jsonpath="$ready"
done
echo "Kubeflow Trainer is ready"
