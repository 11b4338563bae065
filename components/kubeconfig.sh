# shellcheck shell=bash
# Prelude of every kubectl script (components/shell.py's kubectl_command puts it first): the cluster's
# kubeconfig goes to a private temporary file that KUBECONFIG names and that is removed when the script ends.
# It comes either as the secret environment variable TRAINSTACK_KUBECONFIG (the kubeconfig at the last
# `pulumi up`), or, for an existing cluster named by kubeconfigPath, from that file as it is when the script
# runs (TRAINSTACK_KUBECONFIG_PATH, reduced to the context TRAINSTACK_KUBE_CONTEXT), so that a delete run by
# `pulumi destroy` uses the credentials the file holds then, not rotated ones. It never reaches a command
# line or a file that outlives the command. The script after it must not set an EXIT trap of its own.
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
