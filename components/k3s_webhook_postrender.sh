#!/bin/sh
# Helm post-renderer for the Kubeflow Trainer release on k3s (helm.v3.Release `postrender`).
# Helm executes exactly one file, with no arguments, the rendered manifests on stdin; this hands them to
# the pure patch in components/webhook_patch.py, run by the project's virtualenv (Pulumi.yaml: .venv).
set -eu
root=$(CDPATH='' cd -- "$(dirname -- "$0")/.." && pwd)
python="$root/.venv/bin/python"
[ -x "$python" ] || python=python3
cd "$root"
exec "$python" -m components.webhook_patch
