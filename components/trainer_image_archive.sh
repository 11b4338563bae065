# shellcheck shell=bash
# Prelude: saves IMAGE to the temp file ARCHIVE, removed at exit (the script after it sets no EXIT trap).
set -euo pipefail
ARCHIVE="$(mktemp)"
trap 'rm -f "$ARCHIVE"' EXIT
docker save "$IMAGE" -o "$ARCHIVE"
