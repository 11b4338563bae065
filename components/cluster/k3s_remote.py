"""k3s over SSH: a server and agents on the user's hosts, and NFS for the checkpoints they share."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import pulumi
from pulumi_command import remote

from components.cluster.k3s import (
    K3S_API_PORT,
    install_environment,
    k3s_server_flags,
    rewrite_kubeconfig_server,
)
from components.cluster.provider import (
    SHARED_STORAGE_PATH,
    ClusterProvider,
    Provisioned,
    RemoteHosts,
)
from components.cluster.scripts import ROOT_PRELUDE, remote_script

NFS_LIBRARY = "k3s_remote_nfs_lib.sh"


def install_script(version: str, role: str, flags: list[str], *, join_url: str | None = None) -> str:
    environment = install_environment(version, role, flags, join_url=join_url)
    return remote_script(environment, ROOT_PRELUDE, "k3s_install.sh")


def uninstall_script(role: str) -> str:
    return remote_script({"K3S_ROLE": role}, ROOT_PRELUDE, "k3s_uninstall.sh")


def nfs_scripts(hosts: RemoteHosts) -> dict[str, str]:
    """Make/remove the directory and export/unexport it (server), mount/unmount it (every agent)."""
    storage = {"SHARED_STORAGE_PATH": SHARED_STORAGE_PATH}
    return {
        "shared": remote_script(storage, ROOT_PRELUDE, "k3s_remote_nfs_shared.sh"),
        "remove": remote_script(storage, ROOT_PRELUDE, "k3s_remote_nfs_remove.sh"),
        "export": remote_script(
            {**storage, "NFS_CLIENTS": " ".join(hosts.agents)},
            ROOT_PRELUDE,
            NFS_LIBRARY,
            "k3s_remote_nfs_export.sh",
        ),
        "unexport": remote_script(storage, ROOT_PRELUDE, NFS_LIBRARY, "k3s_remote_nfs_unexport.sh"),
        "mount": remote_script(
            {**storage, "NFS_SERVER": hosts.server}, ROOT_PRELUDE, NFS_LIBRARY, "k3s_remote_nfs_mount.sh"
        ),
        "unmount": remote_script(storage, ROOT_PRELUDE, NFS_LIBRARY, "k3s_remote_nfs_unmount.sh"),
    }


@dataclass
class K3sRemote(ClusterProvider):
    """Over SSH: a `remote.Command` installing k3s per host, one reading the node token (the agents' stdin),
    and the server's directory over NFS to the agents. The directory has no triggers and the export's delete
    only unexports, so changing hosts never touches the checkpoints. Node identity: every command.
    Teardown: uninstall, unmount, unexport, then the directory."""

    shared_storage = (
        "the server's directory, exported over NFS (nfs-kernel-server) to the agents, which mount it"
        " (nfs-common, /etc/fstab); Debian/Ubuntu hosts"
    )
    hosts: RemoteHosts

    def provision(self, name: str, parent: pulumi.Resource) -> Provisioned:
        args, hosts = self.args, self.hosts
        private_key = pulumi.Output.secret(hosts.private_key_path.read_text())

        def connection(host: str) -> remote.ConnectionArgs:
            return remote.ConnectionArgs(host=host, user=hosts.user, port=hosts.port, private_key=private_key)

        # The host is a trigger: another host replaces the command (an update would never uninstall the old),
        # deleting first so a replacement never uninstalls what it just installed on the same host.
        server = remote.Command(
            f"{name}-k3s-server",
            connection=connection(hosts.server),
            create=install_script(args.k3s_version, "server", k3s_server_flags(hosts.server)),
            delete=uninstall_script("server"),
            triggers=[hosts.server],
            logging=remote.Logging.STDERR,
            opts=pulumi.ResourceOptions(
                parent=parent, additional_secret_outputs=["stdout"], delete_before_replace=True
            ),
        )
        token = remote.Command(
            f"{name}-k3s-token",
            connection=connection(hosts.server),
            create=remote_script({}, ROOT_PRELUDE, "k3s_remote_token.sh"),
            triggers=[server.id],  # a server installed anew has a new token: read again, the agents rejoin
            logging=remote.Logging.STDERR,
            opts=pulumi.ResourceOptions(
                parent=parent, depends_on=[server], additional_secret_outputs=["stdout"]
            ),
        )
        join_url = f"https://{hosts.server}:{K3S_API_PORT}"
        # One line, newline-terminated, as `read` expects it.
        node_token: pulumi.Output[str] = pulumi.Output.secret(
            token.stdout.apply(lambda text: text.strip() + "\n")
        )
        agents = [
            remote.Command(
                f"{name}-k3s-agent-{index}",
                connection=connection(host),
                create=install_script(args.k3s_version, "agent", [], join_url=join_url),
                delete=uninstall_script("agent"),
                triggers=[host],
                stdin=node_token,
                opts=pulumi.ResourceOptions(parent=parent, depends_on=[token], delete_before_replace=True),
            )
            for index, host in enumerate(hosts.agents)
        ]
        storage = self._nfs(name, parent, hosts, connection, server, agents) if args.shared_storage else []
        kubeconfig = server.stdout.apply(lambda text: rewrite_kubeconfig_server(text, join_url))
        return Provisioned(nodes=[server, *agents], kubeconfig=kubeconfig, storage=storage)

    @staticmethod
    def _nfs(
        name: str,
        parent: pulumi.Resource,
        hosts: RemoteHosts,
        connection: Callable[[str], remote.ConnectionArgs],
        server: remote.Command,
        agents: list[remote.Command],
    ) -> list[pulumi.Resource]:
        scripts = nfs_scripts(hosts)
        directory = remote.Command(
            f"{name}-nfs-shared",
            connection=connection(hosts.server),
            create=scripts["shared"],
            delete=scripts["remove"],
            opts=pulumi.ResourceOptions(parent=parent, depends_on=[server]),
        )
        if not hosts.agents:
            return [directory]  # one node: nothing to export (an export line without clients exports to all)
        export = remote.Command(
            f"{name}-nfs-export",
            connection=connection(hosts.server),
            create=scripts["export"],
            delete=scripts["unexport"],
            # New hosts replace the export, unexported first (the directory stays). Triggers as deployed stacks
            # hold them, so an upgrade updates rather than run the old delete, which removed the directory.
            triggers=[hosts.server, *hosts.agents],
            opts=pulumi.ResourceOptions(
                parent=parent, depends_on=[server, directory], delete_before_replace=True
            ),
        )
        return [
            directory,
            export,
            *(
                remote.Command(
                    f"{name}-nfs-mount-{index}",
                    connection=connection(host),
                    create=scripts["mount"],
                    delete=scripts["unmount"],
                    triggers=[hosts.server, host],
                    opts=pulumi.ResourceOptions(
                        parent=parent, depends_on=[export, agent], delete_before_replace=True
                    ),
                )
                for index, (host, agent) in enumerate(zip(hosts.agents, agents, strict=True))
            ),
        ]
