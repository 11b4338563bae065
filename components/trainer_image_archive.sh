# shellcheck shell=bash
# Prelude of the deliveries that need an image archive (kind load, k3s-in-Docker nodes): saves the local
# image IMAGE to the temporary file ARCHIVE, removed when the script ends (the script after it must not set
# an EXIT trap of its own).
set -euo pipefail
ARCHIVE="$(mktemp)"
trap 'rm -f "$ARCHIVE"' EXIT
docker save "$IMAGE" -o "$ARCHIVE"
