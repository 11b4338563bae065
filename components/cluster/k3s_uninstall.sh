#!/bin/sh
# k3s's own uninstaller of a server or agent (K3S_ROLE) from INSTALL_K3S_BIN_DIR, if k3s is there.
# POSIX sh; root.sh first.
set -eu
if [ "$K3S_ROLE" = server ]; then name=k3s-uninstall.sh; else name=k3s-agent-uninstall.sh; fi
uninstaller="${INSTALL_K3S_BIN_DIR:-/usr/local/bin}/$name"
if [ -x "$uninstaller" ]; then
  require_root "uninstalling k3s"
  as_root "$uninstaller"
fi
