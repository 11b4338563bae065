"""k3s on this machine: one node, installed as a system service through passwordless sudo."""

from __future__ import annotations

import pulumi
from pulumi_command import local

from components.cluster.k3s import INSTALL_SCRIPT, UNINSTALL_SCRIPT, install_environment, k3s_server_flags
from components.cluster.provider import ClusterProvider, Provisioned


class K3sLocal(ClusterProvider):
    """Creates: one `local.Command` installing the k3s server here, printing its kubeconfig. Node identity:
    that command. Shared storage: none (one node). Teardown: k3s-uninstall.sh (k3s's data and images)."""

    shared_storage = None

    def provision(self, name: str, parent: pulumi.Resource) -> Provisioned:
        server = local.Command(
            f"{name}-k3s-server",
            create=INSTALL_SCRIPT,
            delete=UNINSTALL_SCRIPT,
            # delete runs with the same environment, whose K3S_ROLE picks the server's uninstaller.
            environment=install_environment(self.args.k3s_version, "server", k3s_server_flags(None)),
            logging=local.Logging.STDERR,  # stdout is the kubeconfig, a secret in the state
            opts=pulumi.ResourceOptions(parent=parent, additional_secret_outputs=["stdout"]),
        )
        return Provisioned(nodes=[server], kubeconfig=server.stdout)
