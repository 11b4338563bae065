"""The cluster kinds' `.sh` scripts; a remote one gets its inputs as `export` lines, as sshd refuses setenv
unless AcceptEnv lists the name. upstream: pulumi/pulumi-command provider/pkg/provider/remote/commandOutputs.go @ v1.2.1"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pulumi
from pulumi_command import local

from components.cluster.provider import ClusterArgs, Provisioned
from components.shell import BASH, assign, script

PACKAGE = "cluster"
ROOT_PRELUDE = "root.sh"


def cluster_script(*names: str) -> str:
    """The named scripts' text, root.sh where ROOT_PRELUDE is named."""
    return script(*(name if name == ROOT_PRELUDE else f"{PACKAGE}/{name}" for name in names))


def shared_storage(
    name: str,
    parent: pulumi.Resource,
    args: ClusterArgs,
    create: str,
    delete: str,
    environment: Mapping[str, str],
) -> list[pulumi.Resource]:
    """[] without sharedStorage; else the command making and removing it: no triggers, so nothing replaces it
    and its delete (the one that removes checkpoints) runs at `pulumi destroy` alone."""
    if not args.shared_storage:
        return []
    opts = pulumi.ResourceOptions(parent=parent)
    return [
        local.Command(
            name, create=create, delete=delete, interpreter=BASH, environment=dict(environment), opts=opts
        )
    ]


def kubeconfig_command(
    name: str, parent: pulumi.Resource, storage: list[pulumi.Resource], triggers: list[Any], **command: Any
) -> Provisioned:
    """The cluster as one local command printing its kubeconfig (a secret in the state, so logged: stderr);
    a changed trigger is a new cluster, the old one deleted first."""
    opts = pulumi.ResourceOptions(
        parent=parent, additional_secret_outputs=["stdout"], delete_before_replace=True, depends_on=storage
    )
    create = local.Command(
        name, interpreter=BASH, triggers=triggers, logging=local.Logging.STDERR, opts=opts, **command
    )
    return Provisioned(nodes=[create], kubeconfig=create.stdout, storage=storage)


def remote_script(environment: Mapping[str, str], *names: str) -> str:
    """cluster_script(*names) after `export NAME='value'` lines."""
    exports = "".join(f"export {assign(name, value)}\n" for name, value in environment.items())
    return exports + cluster_script(*names)
