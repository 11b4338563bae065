"""The cluster kinds' shell scripts: `.sh` files next to the modules, their inputs environment variables.

Scripts run locally get their inputs through the command's `environment`. A remote command cannot: pulumi-command
hands `environment` to SSH's setenv, which sshd refuses for every name its AcceptEnv does not list, and the
command then fails (pulumi-command v1.2.1, provider/pkg/provider/remote/commandOutputs.go). remote_script
puts the same variables, quoted, in `export` lines ahead of the unchanged script text instead.
"""

from __future__ import annotations

import shlex
from collections.abc import Mapping
from pathlib import Path

SCRIPT_DIR = Path(__file__).resolve().parent
# Library of the scripts that change a host as root (as_root, require_root, ...); goes first.
HOST_LIBRARY = "host.sh"


def script(*names: str) -> str:
    """The text of the named scripts of this package, in order (a library first)."""
    return "".join((SCRIPT_DIR / name).read_text() for name in names)


def remote_script(environment: Mapping[str, str], *names: str) -> str:
    """The named scripts preceded by `export NAME='value'` lines, for a command run by a remote login shell."""
    exports = "".join(f"export {name}={shlex.quote(value)}\n" for name, value in environment.items())
    return exports + script(*names)
