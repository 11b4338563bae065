#!/bin/sh
# Functions of the NFS scripts (POSIX sh), after root.sh.

# apt_install PACKAGE: installs the Debian/Ubuntu package.
apt_install() {
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$1" >&2
}

# replace_line SED_COMMAND LINE FILE: drops the stack's earlier line from FILE (the sed command, e.g.
# '\#^/x #d'), then appends LINE: re-runs leave one.
replace_line() {
  as_root sed -i "$1" "$3"
  echo "$2" | as_root tee -a "$3" >/dev/null
}
