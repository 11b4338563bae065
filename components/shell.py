"""Shell shared by the components' commands: their .sh files, quoting, and kubectl against the stack's cluster."""

from __future__ import annotations

import shlex
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pulumi
from pulumi_command import local

# Commands run by bash so that a failing stage of a pipeline fails the command (pipefail).
BASH = ["/bin/bash", "-c"]

# The components' shell scripts: .sh files here (shellcheck checks them), inputs as environment variables.
COMPONENTS_DIR = Path(__file__).resolve().parent


def script(*names: str) -> str:
    """The text of the .sh files `names` (relative to components/), joined in order, preludes first.

    A command holds the script's text, not its path: a changed script shows as a change to the command, and
    `pulumi destroy` runs the delete script kept in the state, whatever the checkout holds by then.
    Raises FileNotFoundError for a name that is not there.
    """
    return "".join((COMPONENTS_DIR / name).read_text() for name in names)


# Put before every kubectl script: the kubeconfig from a secret environment variable into a private temporary file.
KUBECONFIG_PRELUDE = script("kubeconfig.sh")


# as_root and require_root write inline what root.sh's functions of the same names do, for the scripts that
# are still built in Python (components/cluster.py's); a .sh file puts script("root.sh") before itself.
def as_root(command: str) -> str:
    """The command run as root: directly when already root, else through passwordless sudo (POSIX sh).

    pulumi-command runs scripts without a terminal, so a sudo that would prompt can only fail: `sudo -n`
    fails at once instead, and require_root says why before anything is changed.
    """
    return f'if [ "$(id -u)" -eq 0 ]; then {command}; else sudo -n {command}; fi'


def require_root(what: str) -> str:
    """A POSIX sh check that stops with one clear error unless the script can act as root without a prompt."""
    return f"""if [ "$(id -u)" -ne 0 ] && ! sudo -n true 2>/dev/null; then
  echo "trainstack: {what} needs passwordless sudo: user $(id -un) on $(hostname) is not root and 'sudo -n true' fails" \
       "(add '$(id -un) ALL=(ALL) NOPASSWD: ALL' with visudo, or run as root)" >&2
  exit 1
fi
"""


def assign(name: str, value: str | int) -> str:
    """A shell assignment of a quoted literal, e.g. `NAMESPACE='trainstack'`."""
    return f"{name}={shlex.quote(str(value))}"


def kubectl_command(
    resource_name: str,
    *,
    kubeconfig: pulumi.Input[str],
    script: str,
    triggers: Sequence[Any] | None = None,
    environment: Mapping[str, pulumi.Input[str]] | None = None,
    opts: pulumi.ResourceOptions,
) -> local.Command:
    """A local command whose script (bash text) runs with kubectl pointed at the stack's cluster.

    The kubeconfig travels as the secret environment variable TRAINSTACK_KUBECONFIG; kubeconfig.sh, put
    before the script, writes it to a private temporary file that KUBECONFIG names.
    """
    return local.Command(
        resource_name,
        create=KUBECONFIG_PRELUDE + script,
        interpreter=BASH,
        environment={"TRAINSTACK_KUBECONFIG": kubeconfig, **(environment or {})},
        triggers=list(triggers or []),
        opts=opts,
    )
