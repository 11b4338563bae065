#!/bin/sh
# Functions for the scripts that change a host as root (POSIX sh: a remote login shell may not be bash).
# Prepended to those scripts by scripts.py; defines nothing else.

# Runs its arguments as root: directly when already root, else through sudo. pulumi-command runs scripts
# without a terminal, so a sudo that would prompt can only fail: `sudo -n` fails at once instead, and
# require_root says why before anything is changed.
as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo -n "$@"; fi
}

# Stops with one clear error unless the script can act as root without a prompt; $1 says what for.
require_root() {
  if [ "$(id -u)" -ne 0 ] && ! sudo -n true 2>/dev/null; then
    echo "trainstack: $1 needs passwordless sudo: user $(id -un) on $(hostname) is not root and 'sudo -n true' fails" \
      "(add '$(id -un) ALL=(ALL) NOPASSWD: ALL' with visudo, or run as root)" >&2
    exit 1
  fi
}

# Installs the Debian/Ubuntu package $1.
apt_install() {
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$1" >&2
}

# Drops the stack's earlier line from file $3 (the sed command $1, e.g. '\#^/x #d'), then appends line $2:
# re-runs leave one.
replace_line() {
  as_root sed -i "$1" "$3"
  echo "$2" | as_root tee -a "$3" >/dev/null
}
