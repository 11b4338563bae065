# shellcheck shell=bash
# Prelude of every kubectl script: the kubeconfig in a private temp file KUBECONFIG names, removed at exit,
# from TRAINSTACK_KUBECONFIG, or read now from TRAINSTACK_KUBECONFIG_PATH (so destroy uses the file's
# current credentials). Never on a command line. The script after it must not set an EXIT trap.
set -euo pipefail
umask 077
KUBECONFIG="$(mktemp)"
trap 'rm -f "$KUBECONFIG"' EXIT
if [ -n "${TRAINSTACK_KUBECONFIG_PATH:-}" ]; then
  KUBECONFIG="$TRAINSTACK_KUBECONFIG_PATH" kubectl config view --raw --minify --flatten \
    --context "$TRAINSTACK_KUBE_CONTEXT" >"$KUBECONFIG"
else
  printf '%s' "$TRAINSTACK_KUBECONFIG" >"$KUBECONFIG"
fi
export KUBECONFIG
