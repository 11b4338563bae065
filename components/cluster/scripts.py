"""The cluster kinds' `.sh` scripts; a remote one gets its inputs as `export` lines, as sshd refuses setenv
unless AcceptEnv lists the name. upstream: pulumi/pulumi-command provider/pkg/provider/remote/commandOutputs.go @ v1.2.1"""

from __future__ import annotations

from collections.abc import Mapping

import pulumi
from pulumi_command import local

from components.shell import BASH, assign, script

PACKAGE = "cluster"
ROOT_PRELUDE = "root.sh"


def cluster_script(*names: str) -> str:
    """The named scripts' text, root.sh where ROOT_PRELUDE is named."""
    return script(*(name if name == ROOT_PRELUDE else f"{PACKAGE}/{name}" for name in names))


def shared_storage_command(
    name: str, parent: pulumi.Resource, create: str, delete: str, environment: Mapping[str, str]
) -> local.Command:
    """Makes and removes shared checkpoint storage: no triggers, so nothing replaces it and its delete (the
    one that removes checkpoints) runs at `pulumi destroy` alone."""
    return local.Command(
        name,
        create=create,
        delete=delete,
        interpreter=BASH,
        environment=dict(environment),
        opts=pulumi.ResourceOptions(parent=parent),
    )


def remote_script(environment: Mapping[str, str], *names: str) -> str:
    """cluster_script(*names) after `export NAME='value'` lines."""
    exports = "".join(f"export {assign(name, value)}\n" for name, value in environment.items())
    return exports + cluster_script(*names)
