"""Running the components' .sh files offline: stub programs on PATH that log how they were called."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Mapping
from pathlib import Path

from components.shell import BASH, COMPONENTS_DIR


def stub_tools(tmp_path: Path, scripts: Mapping[str, str]) -> tuple[dict[str, str], Path]:
    """An environment whose PATH starts with stub programs (name -> sh body), each logging `name args` first."""
    bin_dir, log = tmp_path / "stubs", tmp_path / "calls.log"
    bin_dir.mkdir(exist_ok=True)
    log.touch()
    for name, body in scripts.items():
        (bin_dir / name).write_text(f'#!/bin/sh\necho "{name} $*" >> {log}\n{body}\n')
        (bin_dir / name).chmod(0o755)
    return {"PATH": f"{bin_dir}:{os.environ['PATH']}", "HOME": str(tmp_path)}, log


def run_file(
    name: str, environment: Mapping[str, str], *, stdin: str = "", check: bool = True
) -> subprocess.CompletedProcess[str]:
    """Runs components/<name> with bash and only the given environment."""
    return subprocess.run(
        ["bash", str(COMPONENTS_DIR / name)],
        env=dict(environment),
        input=stdin,
        capture_output=True,
        text=True,
        check=check,
    )


def run_text(
    script: str, environment: Mapping[str, str], *, stdin: str = "", check: bool = True
) -> subprocess.CompletedProcess[str]:
    """Runs a command's script text (preludes and script, as the command holds it) as pulumi-command does."""
    return subprocess.run(
        [*BASH, script], env=dict(environment), input=stdin, capture_output=True, text=True, check=check
    )
