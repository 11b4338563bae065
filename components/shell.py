"""Shell shared by the components' commands: their .sh files, quoting, and kubectl against the stack's cluster."""

from __future__ import annotations

import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pulumi
from pulumi_command import local

# Commands run by bash so that a failing stage of a pipeline fails the command (pipefail).
BASH = ["/bin/bash", "-c"]

# The components' shell scripts: .sh files here (shellcheck checks them), inputs as environment variables.
COMPONENTS_DIR = Path(__file__).resolve().parent


def script(*names: str) -> str:
    """The text of the .sh files `names` (relative to components/), joined in order, preludes first. A command
    holds the text, not the path: a changed script changes the command, and destroy runs the one in the state."""
    return "".join((COMPONENTS_DIR / name).read_text() for name in names)


# Put before every kubectl script: the kubeconfig (a secret variable, or a file read then) in a private temporary file.
KUBECONFIG_PRELUDE = script("kubeconfig.sh")


@dataclass(frozen=True)
class KubeconfigFile:
    """The user's kubeconfig file and context of an existing cluster (kubeconfigPath): read whenever a command
    runs, `pulumi destroy`'s deletes included, so that rotated credentials in the file are the ones used."""

    path: str  # absolute
    context: str


def kubeconfig_environment(kubeconfig: pulumi.Input[str] | KubeconfigFile) -> dict[str, pulumi.Input[str]]:
    """The variables kubeconfig.sh reads: the kubeconfig's text (a secret), or a file and its context."""
    if isinstance(kubeconfig, KubeconfigFile):
        return {"TRAINSTACK_KUBECONFIG_PATH": kubeconfig.path, "TRAINSTACK_KUBE_CONTEXT": kubeconfig.context}
    return {"TRAINSTACK_KUBECONFIG": kubeconfig}


def assign(name: str, value: str | int) -> str:
    """A shell assignment of a quoted literal, e.g. `NAMESPACE='trainstack'`."""
    return f"{name}={shlex.quote(str(value))}"


def kubectl_command(
    resource_name: str,
    *,
    kubeconfig: pulumi.Input[str] | KubeconfigFile,
    script: str,
    delete: str | None = None,
    triggers: Sequence[Any] | None = None,
    environment: Mapping[str, pulumi.Input[str]] | None = None,
    opts: pulumi.ResourceOptions,
) -> local.Command:
    """A local command whose script (bash text), and delete script if any, run with kubectl pointed at the
    stack's cluster.

    The kubeconfig travels as the secret environment variable TRAINSTACK_KUBECONFIG, or as a file's path and
    context (KubeconfigFile); kubeconfig.sh, put before each script, writes it to a private temporary file
    that KUBECONFIG names.
    """
    return local.Command(
        resource_name,
        create=KUBECONFIG_PRELUDE + script,
        delete=None if delete is None else KUBECONFIG_PRELUDE + delete,
        interpreter=BASH,
        environment={**kubeconfig_environment(kubeconfig), **(environment or {})},
        triggers=list(triggers or []),
        opts=opts,
    )
