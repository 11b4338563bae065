#!/bin/sh
# Installs (or upgrades) a pinned k3s server or agent with get.k3s.io. A server waits for its API and prints
# its kubeconfig; an agent reads the join token from stdin, so that it never shows in a process list or the
# command text. POSIX sh, because a remote login shell may not be bash. Needs components/root.sh first. The installer
# runs as the login user and calls sudo itself, so passwordless sudo is checked first.
# Environment: K3S_ROLE (server or agent), INSTALL_K3S_VERSION (the release; the installer reads it),
# K3S_FLAGS (k3s flags separated by spaces), and for an agent K3S_URL (the server's API; the installer reads it).
set -eu
require_root "installing k3s"
# The installer reads every K3S_* and INSTALL_K3S_* variable (get.k3s.io: K3S_URL and K3S_TOKEN join another
# cluster, INSTALL_K3S_EXEC replaces the command, INSTALL_K3S_SKIP_*...), and pulumi-command hands this script
# the environment of the shell that ran `pulumi up`: only the stack's own reach it.
for name in $(env | sed -n 's/^\(K3S_[A-Za-z0-9_]*\|INSTALL_K3S_[A-Za-z0-9_]*\)=.*/\1/p'); do
  case "$name" in
    K3S_ROLE | K3S_FLAGS | INSTALL_K3S_VERSION) ;;
    K3S_URL) if [ "$K3S_ROLE" != agent ]; then unset K3S_URL; fi ;;
    *) unset "$name" ;;
  esac
done
if [ "$K3S_ROLE" = agent ]; then
  # `read` fails at end of input when the last line has no newline: the token counts if anything was read.
  IFS= read -r K3S_TOKEN || [ -n "${K3S_TOKEN:-}" ]
  export K3S_TOKEN K3S_URL
fi
export INSTALL_K3S_VERSION
installer="$(mktemp)"
trap 'rm -f "$installer"' EXIT
curl -sfL https://get.k3s.io -o "$installer"
# K3S_FLAGS is a list of flags without spaces in them: split it into words.
# shellcheck disable=SC2086
sh "$installer" "$K3S_ROLE" ${K3S_FLAGS:-} >&2
if [ "$K3S_ROLE" = server ]; then
  tries=0
  until as_root k3s kubectl get --raw=/readyz >/dev/null 2>&1; do
    tries=$((tries + 1))
    if [ "$tries" -gt 90 ]; then echo "the k3s API is not ready after 180s" >&2; exit 1; fi
    sleep 2
  done
  # Root-only (--write-kubeconfig-mode=600): it holds the cluster-admin credentials.
  as_root cat /etc/rancher/k3s/k3s.yaml
fi
