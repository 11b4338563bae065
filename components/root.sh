# shellcheck shell=sh
# Prelude of the scripts that act as root (POSIX sh: on a remote node it runs in the login's shell).
# pulumi-command runs scripts without a terminal, so a sudo that would prompt could only fail: `sudo -n`
# fails at once instead, and require_root says why before anything is changed.

# require_root WHAT: stops with one clear error unless this user is root or has passwordless sudo.
require_root() {
  if [ "$(id -u)" -ne 0 ] && ! sudo -n true 2>/dev/null; then
    echo "trainstack: $1 needs passwordless sudo: user $(id -un) on $(hostname) is not root and 'sudo -n true' fails" \
      "(add '$(id -un) ALL=(ALL) NOPASSWD: ALL' with visudo, or run as root)" >&2
    exit 1
  fi
}

# as_root COMMAND [ARGUMENT...]: runs the command as root, directly when already root, else through sudo -n.
as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo -n "$@"; fi
}
