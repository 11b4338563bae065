"""Stub programs for running the cluster kinds' scripts offline: each logs its calls, then does its part."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Mapping
from pathlib import Path

from components.cluster.scripts import SCRIPT_DIR
from components.shell import BASH

POSIX_SH = ["/bin/sh", "-c"]

# curl "downloads" an installer that records the environment it ran with.
FAKE_INSTALLER = """out=""
while [ $# -gt 0 ]; do if [ "$1" = -o ]; then out=$2; fi; shift; done
printf '%s\\n' 'echo "installer $* token=${K3S_TOKEN:-} url=${K3S_URL:-} version=$INSTALL_K3S_VERSION" >> "$CALLS"' > "$out"
"""
# A root shell's id; a non-root user's, whose `sudo -n true` fails (no passwordless sudo).
ROOT_ID = 'case "$1" in -u) echo 0;; -un) echo root;; esac'
USER_ID = 'case "$1" in -u) echo 1000;; -un) echo ops;; esac'


def stub_tools(tmp_path: Path, scripts: Mapping[str, str]) -> tuple[dict[str, str], Path]:
    """An environment whose PATH starts with stub programs (name -> sh body) that log their calls to the log.

    The log's path is in $CALLS too, for stubs that record more than their arguments.
    """
    bin_dir, log = tmp_path / "stubs", tmp_path / "calls.log"
    bin_dir.mkdir(exist_ok=True)
    log.touch()
    for name, body in scripts.items():
        (bin_dir / name).write_text(f'#!/bin/sh\necho "{name} $*" >> "{log}"\n{body}\n')
        (bin_dir / name).chmod(0o755)
    environment = {"PATH": f"{bin_dir}:{os.environ['PATH']}", "HOME": str(tmp_path), "CALLS": str(log)}
    return environment, log


def run(
    script: str,
    environment: Mapping[str, str],
    *,
    interpreter: list[str] = BASH,
    stdin: str = "",
) -> subprocess.CompletedProcess[str]:
    """Runs a script text the way pulumi-command does: interpreter + text, the environment, stdin."""
    return subprocess.run(
        [*interpreter, script], env=dict(environment), input=stdin, capture_output=True, text=True
    )


def calls(log: Path) -> list[str]:
    return log.read_text().splitlines()


def package_scripts() -> list[Path]:
    """Every .sh file of the cluster package."""
    return sorted(SCRIPT_DIR.glob("*.sh"))
