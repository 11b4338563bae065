"""The cluster kinds' shell scripts: `.sh` files next to the modules, their inputs environment variables.

Names are relative to components/ (components.shell.script), e.g. "cluster/kind_create.sh"; scripts that act
as root start with "root.sh" (as_root, require_root). Scripts run locally get their inputs through the
command's `environment`. A remote command cannot: pulumi-command hands `environment` to SSH's setenv, which
sshd refuses for every name its AcceptEnv does not list, and the command then fails (pulumi-command v1.2.1,
provider/pkg/provider/remote/commandOutputs.go). remote_script puts the same variables, quoted, in `export`
lines ahead of the unchanged script text instead.
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
