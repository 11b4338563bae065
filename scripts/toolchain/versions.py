"""The versions the real toolchain builds, read from what the project pins, printed as shell assignments.

- PULUMI_VERSION: `pulumi` in requirements.txt (the CLI must match the Python SDK).
- PULUMI_<PLUGIN>_VERSION: the plugin version each provider SDK asks for (its pulumi-plugin.json).
- TRAINER_VERSION: the Pulumi.yaml default the stacks install.
- KIND_VERSION: the kind release whose node image Pulumi.yaml's kindNodeImage default is (its description
  names it: "the image published with kind vX.Y.Z").
"""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
PROVIDER_PACKAGES = {
    "KUBERNETES": "pulumi-kubernetes",
    "COMMAND": "pulumi-command",
    "DOCKER": "pulumi-docker",
}


def pinned_requirements() -> dict[str, str]:
    """name -> version for every `name==version` line of requirements.txt."""
    pins = {}
    for line in (ROOT / "requirements.txt").read_text().splitlines():
        match = re.match(r"^([A-Za-z0-9_.-]+)==([^\s;#]+)", line.strip())
        if match:
            pins[match[1].lower()] = match[2]
    return pins


def plugin_version(package: str, version: str) -> str:
    """The resource plugin version the SDK wheel declares in its pulumi-plugin.json."""
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "download",
                "-q",
                "--no-deps",
                "--only-binary=:all:",
                "-d",
                tmp,
                f"{package}=={version}",
            ],
            check=True,
            stdout=subprocess.DEVNULL,
        )
        (wheel,) = Path(tmp).glob("*.whl")
        with zipfile.ZipFile(wheel) as archive:
            name = next(n for n in archive.namelist() if n.endswith("/pulumi-plugin.json"))
            return str(json.loads(archive.read(name))["version"]).removeprefix("v")


def kind_version(config: dict[str, dict[str, str]]) -> str:
    """The kind release kindNodeImage's description names."""
    match = re.search(r"published with kind v(\d+\.\d+\.\d+)", config["kindNodeImage"]["description"])
    if match is None:
        raise SystemExit(
            "Pulumi.yaml: kindNodeImage's description names no kind release ('published with kind vX.Y.Z')"
        )
    return match[1]


def main() -> None:
    pins = pinned_requirements()
    config = yaml.safe_load((ROOT / "Pulumi.yaml").read_text())["config"]
    values = {
        "PULUMI_VERSION": pins["pulumi"],
        **{f"PULUMI_{key}_VERSION": plugin_version(pkg, pins[pkg]) for key, pkg in PROVIDER_PACKAGES.items()},
        "TRAINER_VERSION": config["trainerVersion"]["default"].removeprefix("v"),
        "KIND_VERSION": kind_version(config),
    }
    for key, value in values.items():
        print(f"{key}={shlex.quote(value)}")


if __name__ == "__main__":
    main()
