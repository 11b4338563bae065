#!/usr/bin/env bash
# After kubeconfig.sh: NAMESPACE's Deployments Available, and each of WEBHOOKS with a CA bundle and a ready
# Service endpoint (without one, admission fails under failurePolicy Fail).
set -euo pipefail
kubectl -n "$NAMESPACE" wait deployment --all --for=condition=Available --timeout=600s
deadline=$(($(date +%s) + 300))
# wait_for WHAT COMMAND...: until COMMAND prints something, or fail at the deadline.
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
