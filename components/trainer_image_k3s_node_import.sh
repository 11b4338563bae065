# shellcheck shell=sh
# On a k3s node, after root.sh (POSIX sh): the archive on stdin into containerd's k8s.io namespace.
set -eu
require_root "importing the image into k3s"
as_root k3s ctr -n k8s.io images import -
