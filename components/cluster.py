"""The Kubernetes cluster (kind on this machine, or k3s here or over SSH) and the provider every Kubernetes resource uses."""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pulumi
import pulumi_kubernetes as k8s
import yaml
from pulumi_command import local, remote

from components.shell import BASH, as_root, assign

K3S_API_PORT = 6443
K3S_INSTALLER_URL = "https://get.k3s.io"
K3S_KUBECONFIG = "/etc/rancher/k3s/k3s.yaml"
K3S_NODE_TOKEN = "/var/lib/rancher/k3s/server/node-token"
# nvkind's GPU passthrough: with accept-nvidia-visible-devices-as-volume-mounts on the host's toolkit, a
# /dev/null mount at this path makes Docker's nvidia runtime hand every GPU to the kind node container.
NVIDIA_DEVICES_MOUNT = "/var/run/nvidia-container-devices/all"


@dataclass(frozen=True)
class RemoteHosts:
    """The hosts of a k3s cluster installed over SSH."""

    # Address of the k3s server: SSH, and the Kubernetes API on port 6443.
    server: str
    # Addresses of the k3s agents, joined to the server with its node token.
    agents: tuple[str, ...]
    # SSH user; needs passwordless sudo.
    user: str
    # SSH port.
    port: int
    # Private key file for every host.
    private_key_path: Path

    @property
    def all(self) -> tuple[str, ...]:
        """Server first, then the agents."""
        return (self.server, *self.agents)


@dataclass(frozen=True)
class ClusterArgs:
    """What cluster to create."""

    # "kind" or "k3s".
    kind: str
    # Name of the kind cluster (k3s has no name; the stack's outputs carry it).
    name: str
    # Schedulable nodes wanted for training: kind creates a lone control plane, or a control plane plus this many workers.
    node_count: int
    # GPUs per node; above 0, kind mounts the host's GPUs into the training nodes the nvkind way.
    gpus_per_node: int
    # kind node image (pins the Kubernetes version).
    kind_node_image: str
    # k3s release installed by get.k3s.io.
    k3s_version: str
    # Hosts of a remote k3s cluster; None installs k3s on this machine.
    remote: RemoteHosts | None = None


def render_kind_config(args: ClusterArgs) -> str:
    """kind's cluster config: the nodes, their pinned image and, for GPUs, nvkind's device mount."""
    gpu_mounts = (
        [{"hostPath": "/dev/null", "containerPath": NVIDIA_DEVICES_MOUNT}] if args.gpus_per_node else []
    )

    def node(role: str, mounts: list[dict[str, str]]) -> dict[str, Any]:
        spec: dict[str, Any] = {"role": role, "image": args.kind_node_image}
        if mounts:
            spec["extraMounts"] = mounts
        return spec

    if args.node_count == 1:
        nodes = [node("control-plane", gpu_mounts)]  # kind leaves a lone control plane schedulable
    else:
        nodes = [node("control-plane", []), *(node("worker", gpu_mounts) for _ in range(args.node_count))]
    config = {"kind": "Cluster", "apiVersion": "kind.x-k8s.io/v1alpha4", "nodes": nodes}
    return yaml.safe_dump(config, sort_keys=False)


def kind_create_script(gpu_passthrough: bool) -> str:
    """Creates the kind cluster named $KIND_CLUSTER from the config on stdin (reusing one that exists) and prints its kubeconfig."""
    checks = ""
    if gpu_passthrough:
        # Fail with the fix instead of creating a cluster that silently has no GPU.
        checks = """if [ "$(docker info --format '{{.DefaultRuntime}}')" != nvidia ]; then
  echo "GPU passthrough to kind needs Docker's default runtime to be nvidia:" \\
       "sudo nvidia-ctk runtime configure --runtime=docker --set-as-default && sudo systemctl restart docker" >&2
  exit 1
fi
if ! grep -Eq '^[[:space:]]*accept-nvidia-visible-devices-as-volume-mounts[[:space:]]*=[[:space:]]*true' \\
    /etc/nvidia-container-runtime/config.toml; then
  echo "GPU passthrough to kind needs" \\
       "sudo nvidia-ctk config --set accept-nvidia-visible-devices-as-volume-mounts=true --in-place" >&2
  exit 1
fi
"""
    return (
        "set -euo pipefail\n"
        + checks
        + """if kind get clusters 2>/dev/null | grep -qx "$KIND_CLUSTER"; then
  echo "kind cluster $KIND_CLUSTER exists: reusing it" >&2
else
  kind create cluster --name "$KIND_CLUSTER" --config /dev/stdin --wait 180s >&2
fi
kind get kubeconfig --name "$KIND_CLUSTER"
"""
    )


def k3s_install_script(version: str, role: str, flags: list[str], *, join_url: str | None = None) -> str:
    """Installs (or upgrades) a pinned k3s server or agent; an agent reads the join token from stdin.

    A server waits for its API and prints its kubeconfig. POSIX sh, because a remote login shell may not be bash.
    """
    lines = ["set -eu"]
    if join_url is not None:
        # The token comes on stdin so it never shows in a process list or the command text.
        lines += ["IFS= read -r K3S_TOKEN", "export K3S_TOKEN", "export " + assign("K3S_URL", join_url)]
    lines += [
        'installer="$(mktemp)"',
        "trap 'rm -f \"$installer\"' EXIT",
        f'curl -sfL {K3S_INSTALLER_URL} -o "$installer"',
        f'{assign("INSTALL_K3S_VERSION", version)} sh "$installer" {role} {" ".join(map(shlex.quote, flags))} >&2',
    ]
    if role == "server":
        lines += [
            "tries=0",
            "until k3s kubectl get --raw=/readyz >/dev/null 2>&1; do",
            "  tries=$((tries + 1))",
            '  if [ "$tries" -gt 90 ]; then echo "the k3s API is not ready after 180s" >&2; exit 1; fi',
            "  sleep 2",
            "done",
            f"cat {K3S_KUBECONFIG}",
        ]
    return "\n".join(lines) + "\n"


def k3s_uninstall_script(role: str) -> str:
    """Runs k3s's own uninstaller for a server or agent; nothing to do when k3s is already gone."""
    uninstaller = (
        "/usr/local/bin/k3s-uninstall.sh" if role == "server" else "/usr/local/bin/k3s-agent-uninstall.sh"
    )
    return f"if [ -x {uninstaller} ]; then\n  {as_root(uninstaller)}\nfi\n"


def rewrite_kubeconfig_server(kubeconfig: str, server_url: str) -> str:
    """The kubeconfig with every cluster's API server set to server_url (k3s writes https://127.0.0.1:6443)."""
    document = yaml.safe_load(kubeconfig)
    for entry in document.get("clusters") or []:
        entry["cluster"]["server"] = server_url
    return yaml.safe_dump(document, sort_keys=False)


def k3s_server_flags(advertised_host: str | None) -> list[str]:
    """k3s server flags: a kubeconfig readable without sudo, no Traefik, and the remote address in the API certificate."""
    flags = ["--write-kubeconfig-mode=644", "--disable=traefik"]
    if advertised_host is not None:
        flags.append(f"--tls-san={advertised_host}")
    return flags


class Cluster(pulumi.ComponentResource):
    """A kind or k3s cluster, its kubeconfig (a secret) and the Kubernetes provider bound to it."""

    kubeconfig: pulumi.Output[str]
    provider: k8s.Provider

    def __init__(self, name: str, args: ClusterArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("trainstack:index:Cluster", name, None, opts)
        if args.kind == "kind":
            nodes, kubeconfig = self._kind(name, args)
        elif args.remote is None:
            nodes, kubeconfig = self._k3s_local(name, args)
        else:
            nodes, kubeconfig = self._k3s_remote(name, args, args.remote)
        self.kubeconfig = pulumi.Output.secret(kubeconfig)
        self.provider = k8s.Provider(
            f"{name}-provider",
            kubeconfig=self.kubeconfig,
            opts=pulumi.ResourceOptions(parent=self, depends_on=nodes),
        )
        self.register_outputs({"kubeconfig": self.kubeconfig, "clusterName": args.name})

    # Commands that print the kubeconfig or the node token log only stderr (logging=STDERR) and mark
    # stdout secret: neither may reach Pulumi's logs or state in plaintext.

    def _kind(self, name: str, args: ClusterArgs) -> tuple[list[pulumi.Resource], pulumi.Output[str]]:
        config = render_kind_config(args)
        create = local.Command(
            f"{name}-kind",
            create=kind_create_script(gpu_passthrough=args.gpus_per_node > 0),
            delete='kind delete cluster --name "$KIND_CLUSTER"',
            stdin=config,
            interpreter=BASH,
            environment={"KIND_CLUSTER": args.name},
            # A changed environment alone would only re-run create (an update), leaving the cluster of the
            # old name behind: a new name, like a new config, replaces it.
            triggers=[config, args.name],
            logging=local.Logging.STDERR,
            # A new config means a new cluster: delete the old one first, as both carry the same name.
            opts=pulumi.ResourceOptions(
                parent=self, additional_secret_outputs=["stdout"], delete_before_replace=True
            ),
        )
        return [create], create.stdout

    def _k3s_local(self, name: str, args: ClusterArgs) -> tuple[list[pulumi.Resource], pulumi.Output[str]]:
        server = local.Command(
            f"{name}-k3s-server",
            create=k3s_install_script(args.k3s_version, "server", k3s_server_flags(None)),
            delete=k3s_uninstall_script("server"),
            logging=local.Logging.STDERR,
            opts=pulumi.ResourceOptions(parent=self, additional_secret_outputs=["stdout"]),
        )
        return [server], server.stdout

    def _k3s_remote(
        self, name: str, args: ClusterArgs, hosts: RemoteHosts
    ) -> tuple[list[pulumi.Resource], pulumi.Output[str]]:
        private_key = pulumi.Output.secret(hosts.private_key_path.read_text())

        def connection(host: str) -> remote.ConnectionArgs:
            return remote.ConnectionArgs(host=host, user=hosts.user, port=hosts.port, private_key=private_key)

        # A changed connection alone is an update, which runs create on the new host and never the old
        # one's uninstaller: the host is a trigger, so another host replaces the command (and uninstalls),
        # deleting first so that a replacement never uninstalls what it has just installed on the same host.

        server = remote.Command(
            f"{name}-k3s-server",
            connection=connection(hosts.server),
            create=k3s_install_script(args.k3s_version, "server", k3s_server_flags(hosts.server)),
            delete=k3s_uninstall_script("server"),
            triggers=[hosts.server],
            logging=remote.Logging.STDERR,
            opts=pulumi.ResourceOptions(
                parent=self, additional_secret_outputs=["stdout"], delete_before_replace=True
            ),
        )
        token = remote.Command(
            f"{name}-k3s-token",
            connection=connection(hosts.server),
            create=as_root(f"cat {K3S_NODE_TOKEN}"),
            logging=remote.Logging.STDERR,
            opts=pulumi.ResourceOptions(
                parent=self, depends_on=[server], additional_secret_outputs=["stdout"]
            ),
        )
        join_url = f"https://{hosts.server}:{K3S_API_PORT}"
        node_token: pulumi.Output[str] = pulumi.Output.secret(token.stdout.apply(lambda text: text.strip()))
        agents = [
            remote.Command(
                f"{name}-k3s-agent-{index}",
                connection=connection(host),
                create=k3s_install_script(args.k3s_version, "agent", [], join_url=join_url),
                delete=k3s_uninstall_script("agent"),
                triggers=[host],
                stdin=node_token,
                opts=pulumi.ResourceOptions(parent=self, depends_on=[token], delete_before_replace=True),
            )
            for index, host in enumerate(hosts.agents)
        ]
        kubeconfig = server.stdout.apply(lambda text: rewrite_kubeconfig_server(text, join_url))
        return [server, *agents], kubeconfig
