"""The cluster kinds' `.sh` scripts (names relative to components/), their inputs environment variables.

A remote command gets them as `export` lines ahead of the script: pulumi-command hands `environment` to SSH's
setenv, which sshd refuses unless AcceptEnv lists the name (upstream: pulumi/pulumi-command
provider/pkg/provider/remote/commandOutputs.go @ v1.2.1).
"""

from __future__ import annotations

from collections.abc import Mapping

import pulumi
from pulumi_command import local

from components.shell import BASH, assign, script

# The package's scripts, relative to components/.
PACKAGE = "cluster"
# Before every script that acts as root: as_root and require_root.
ROOT_PRELUDE = "root.sh"


def cluster_script(*names: str) -> str:
    """The text of this package's named scripts, after root.sh when the first name is ROOT_PRELUDE."""
    return script(*(name if name == ROOT_PRELUDE else f"{PACKAGE}/{name}" for name in names))


def shared_storage_command(
    name: str, parent: pulumi.Resource, create: str, delete: str, environment: Mapping[str, str]
) -> local.Command:
    """A local command that makes a kind's shared checkpoint storage and removes it: no triggers, so no
    change replaces it (pulumi-command v1.2.1 replaces a command only when its triggers change), and its
    delete, the one that removes checkpoints, runs at `pulumi destroy` alone."""
    return local.Command(
        name,
        create=create,
        delete=delete,
        interpreter=BASH,
        environment=dict(environment),
        opts=pulumi.ResourceOptions(parent=parent),
    )


def remote_script(environment: Mapping[str, str], *names: str) -> str:
    """cluster_script(*names) preceded by `export NAME='value'` lines, for a command run by a remote login shell."""
    exports = "".join(f"export {assign(name, value)}\n" for name, value in environment.items())
    return exports + cluster_script(*names)
