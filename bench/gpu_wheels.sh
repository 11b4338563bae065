#!/usr/bin/env bash
# The wheels the lent GPU machine lacks for the trainer (/work/shared/notes/gpu-device.md): deepspeed, built
# here as a pure wheel (no compiled ops) from its sdist with the project's venv, and hjson, pydantic and its
# dependencies as CPython 3.12 manylinux wheels, each at the version the project's venv has (the versions
# DeepSpeed was tested with here). Into WHEELS (default .whl/, git-ignored; carry it to the device machine,
# where bench/gpu_suite.sh installs them when deepspeed is missing). Needs the package index.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
WHEELS="${WHEELS:-$ROOT/.whl}"
VENV_PYTHON="${VENV_PYTHON:-$ROOT/.venv/bin/python}"
mkdir -p "$WHEELS"

pinned() {  # NAME==VERSION as installed in the project's venv
  "$VENV_PYTHON" -c 'import sys; from importlib.metadata import version; print(f"{sys.argv[1]}=={version(sys.argv[1])}")' "$1"
}

DS_BUILD_OPS=0 "$VENV_PYTHON" -m pip wheel -q --no-deps --no-build-isolation -w "$WHEELS" "$(pinned deepspeed)"
mapfile -t others < <(for name in hjson pydantic pydantic-core annotated-types typing-inspection typing-extensions; do
  pinned "$name"
done)
"$VENV_PYTHON" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux2014_x86_64 -d "$WHEELS" "${others[@]}"
ls -l "$WHEELS"
