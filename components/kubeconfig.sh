# shellcheck shell=bash
# Prelude of every kubectl script (components/shell.py's kubectl_command puts it first): the cluster's
# kubeconfig, given as the secret environment variable TRAINSTACK_KUBECONFIG, goes to a private temporary
# file that KUBECONFIG names and that is removed when the script ends. It never reaches a command line or a
# file that outlives the command. The script after it must not set an EXIT trap of its own.
set -euo pipefail
umask 077
KUBECONFIG="$(mktemp)"
export KUBECONFIG
trap 'rm -f "$KUBECONFIG"' EXIT
printf '%s' "$TRAINSTACK_KUBECONFIG" >"$KUBECONFIG"
