"""Shell snippets shared by the components' commands: quoting and running kubectl against the stack's cluster."""

from __future__ import annotations

import shlex
from collections.abc import Mapping, Sequence
from typing import Any

import pulumi
from pulumi_command import local

# Commands run by bash so that a failing stage of a pipeline fails the command (pipefail).
BASH = ["/bin/bash", "-c"]

# The kubeconfig reaches kubectl through a secret environment variable and a private temporary file,
# never through the command line or a file that outlives the command.
_KUBECONFIG_PRELUDE = """set -euo pipefail
umask 077
KUBECONFIG="$(mktemp)"
export KUBECONFIG
trap 'rm -f "$KUBECONFIG"' EXIT
printf '%s' "$TRAINSTACK_KUBECONFIG" > "$KUBECONFIG"
"""


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
    """A local command whose script runs with kubectl pointed at the stack's cluster."""
    return local.Command(
        resource_name,
        create=_KUBECONFIG_PRELUDE + script,
        interpreter=BASH,
        environment={"TRAINSTACK_KUBECONFIG": kubeconfig, **(environment or {})},
        triggers=list(triggers or []),
        opts=opts,
    )
