"""Shell shared by the components' commands: their .sh files, quoting, and kubectl against the stack's cluster."""

from __future__ import annotations

import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pulumi
from pulumi_command import local

BASH = ["/bin/bash", "-c"]  # for pipefail
COMPONENTS_DIR = Path(__file__).resolve().parent


def script(*names: str) -> str:
    """The .sh files' text, joined: a changed script changes the command; destroy runs the one in the state."""
    return "".join((COMPONENTS_DIR / name).read_text() for name in names)


KUBECONFIG_PRELUDE = script("kubeconfig.sh")


@dataclass(frozen=True)
class KubeconfigFile:
    """kubeconfigPath: read whenever a command runs (destroy included), so rotated credentials are used."""

    path: str  # absolute
    context: str


def kubeconfig_environment(kubeconfig: pulumi.Input[str] | KubeconfigFile) -> dict[str, pulumi.Input[str]]:
    if isinstance(kubeconfig, KubeconfigFile):
        return {"TRAINSTACK_KUBECONFIG_PATH": kubeconfig.path, "TRAINSTACK_KUBE_CONTEXT": kubeconfig.context}
    return {"TRAINSTACK_KUBECONFIG": kubeconfig}


def assign(name: str, value: str | int) -> str:
    """e.g. `NAMESPACE='trainstack'`"""
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
    """A local command whose scripts run after kubeconfig.sh, with kubectl pointed at the stack's cluster."""
    return local.Command(
        resource_name,
        create=KUBECONFIG_PRELUDE + script,
        delete=None if delete is None else KUBECONFIG_PRELUDE + delete,
        interpreter=BASH,
        environment={**kubeconfig_environment(kubeconfig), **(environment or {})},
        triggers=list(triggers or []),
        opts=opts,
    )
