"""Prints a manifest kind's node-image build writes into the image, from kind's own Go source.

    python3 kind_manifest.py const_cni.go defaultCNIManifest     # /kind/manifests/default-cni.yaml

kind v0.29.0 keeps them as Go constants (pkg/build/nodeimage/const_cni.go, const_storage.go): raw strings
joined with `+` to string constants (the image names). Only that form is read; anything else fails.
Standard library only (the toolchain runs it with the system python3).
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

STRING = r'"(?:[^"\\]|\\.)*"'
RAW = r"`[^`]*`"


def constants(source: str) -> dict[str, str]:
    """Every `const NAME = <string> [+ <string or NAME>]...` of the file, evaluated."""
    values: dict[str, str] = {}
    term = rf"(?:{RAW}|{STRING}|[A-Za-z_]\w*)"
    for match in re.finditer(rf"^const\s+(\w+)\s*=\s*({term}(?:\s*\+\s*{term})*)", source, flags=re.M):
        parts = re.findall(rf"{RAW}|{STRING}|[A-Za-z_]\w*", match[2])
        value = ""
        for part in parts:
            if part.startswith("`"):
                value += part[1:-1]
            elif part.startswith('"'):
                value += part[1:-1].encode().decode("unicode_escape")
            elif part in values:
                value += values[part]
            else:
                raise SystemExit(
                    f"kind_manifest: {match[1]} refers to {part}, which is no string constant before it"
                )
        values[match[1]] = value
    return values


def main() -> None:
    path, name = sys.argv[1:3]
    values = constants(Path(path).read_text())
    if name not in values:
        raise SystemExit(f"kind_manifest: no string constant {name} in {path}")
    sys.stdout.write(values[name])


if __name__ == "__main__":
    main()
