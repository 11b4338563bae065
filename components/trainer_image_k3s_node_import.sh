# shellcheck shell=sh
# Runs on a k3s node, after root.sh (POSIX sh: over SSH it is the command of the login's shell): imports the
# image archive on stdin into containerd's k8s.io namespace, the kubelet's, as root.
set -eu
require_root "importing the image into k3s"
as_root k3s ctr -n k8s.io images import -
