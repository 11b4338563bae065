"""Stub programs for running the cluster kinds' scripts offline (tests.support.shell_stubs), and what they share."""

from __future__ import annotations

import subprocess
from collections.abc import Mapping
from pathlib import Path

from components.cluster.scripts import PACKAGE
from components.shell import BASH, COMPONENTS_DIR
from tests.support import shell_stubs

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
    """tests.support.shell_stubs.stub_tools, with the log's path in $CALLS for stubs that record more than arguments."""
    environment, log = shell_stubs.stub_tools(tmp_path, scripts)
    return {**environment, "CALLS": str(log)}, log


def run(
    script: str,
    environment: Mapping[str, str],
    *,
    interpreter: list[str] = BASH,
    stdin: str = "",
) -> subprocess.CompletedProcess[str]:
    """Runs a command's script text as pulumi-command does: interpreter + text, the environment, stdin."""
    return subprocess.run(
        [*interpreter, script], env=dict(environment), input=stdin, capture_output=True, text=True
    )


def calls(log: Path) -> list[str]:
    return log.read_text().splitlines()


def package_scripts() -> list[Path]:
    """Every .sh file of the cluster package."""
    return sorted((COMPONENTS_DIR / PACKAGE).glob("*.sh"))
