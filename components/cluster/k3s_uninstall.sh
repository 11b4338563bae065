#!/bin/sh
# Runs k3s's own uninstaller of a server or agent (K3S_ROLE); nothing to do when k3s is already gone.
# The uninstallers lie where the installer put k3s: INSTALL_K3S_BIN_DIR, the installer's own variable
# (default /usr/local/bin). POSIX sh; needs components/root.sh first.
set -eu
if [ "$K3S_ROLE" = server ]; then name=k3s-uninstall.sh; else name=k3s-agent-uninstall.sh; fi
uninstaller="${INSTALL_K3S_BIN_DIR:-/usr/local/bin}/$name"
if [ -x "$uninstaller" ]; then
  require_root "uninstalling k3s"
  as_root "$uninstaller"
fi
