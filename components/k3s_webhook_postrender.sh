#!/bin/sh
# Helm post-renderer on k3s: manifests on stdin to components/webhook_patch.py, in the project's .venv.
set -eu
root=$(CDPATH='' cd -- "$(dirname -- "$0")/.." && pwd)
python="$root/.venv/bin/python"
[ -x "$python" ] || python=python3
cd "$root"
exec "$python" -m components.webhook_patch
