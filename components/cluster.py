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

from components.shell import BASH, as_root, assign, require_root

K3S_API_PORT = 6443
K3S_INSTALLER_URL = "https://get.k3s.io"
K3S_KUBECONFIG = "/etc/rancher/k3s/k3s.yaml"
K3S_NODE_TOKEN = "/var/lib/rancher/k3s/server/node-token"
# nvkind's GPU passthrough: with accept-nvidia-visible-devices-as-volume-mounts on the host's toolkit, a
# /dev/null mount at this path makes Docker's nvidia runtime hand every GPU to the kind node container.
NVIDIA_DEVICES_MOUNT = "/var/run/nvidia-container-devices/all"
# Shared checkpoint storage of a multi-node cluster: the same directory on every node (a Docker volume in
# every k3s node container, a host directory in every kind node, an NFS export of the k3s server mounted on
# every remote agent), offered to the job as a ReadWriteMany hostPath PersistentVolume.
SHARED_STORAGE_PATH = "/var/lib/trainstack/shared"
# k3s imports every image archive in this directory when it starts (its air-gap mechanism).
K3S_AIRGAP_IMAGES = "/var/lib/rancher/k3s/agent/images"
# k3s add-ons a training cluster does not need (and whose images an offline cluster would not have).
K3S_DISABLED = "traefik,servicelb,metrics-server"
# Label on every Docker object of a k3s-in-Docker cluster, so that destroy finds them all.
DOCKER_CLUSTER_LABEL = "dev.trainstack.cluster"


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
class DockerNodes:
    """k3s nodes as Docker containers on this machine (like k3d): one server, nodeCount - 1 agents."""

    # Node image: the official rancher/k3s tag of the k3s version, or a mirror of it.
    image: str
    # Host directory of image archives imported by every node at start (air-gap images); None for none.
    airgap_images: Path | None = None


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
    # Hosts of a remote k3s cluster; None installs k3s on this machine (or in Docker, see docker).
    remote: RemoteHosts | None = None
    # k3s nodes as Docker containers; None for kind, local or remote k3s.
    docker: DockerNodes | None = None
    # Provide SHARED_STORAGE_PATH on every node (a multi-node job without a StorageClass of the user's).
    shared_storage: bool = False

    @property
    def k3s_in_docker(self) -> bool:
        """k3s nodes are Docker containers on this machine."""
        return self.kind == "k3s" and self.docker is not None


def kind_shared_directory(cluster_name: str) -> Path:
    """The host directory a multi-node kind cluster shares into every node as SHARED_STORAGE_PATH."""
    return Path.home() / ".local" / "share" / "trainstack" / cluster_name / "shared"


def render_kind_config(args: ClusterArgs) -> str:
    """kind's cluster config: the nodes, their pinned image, nvkind's GPU mount and the shared directory."""
    training_mounts = []
    if args.gpus_per_node:
        training_mounts.append({"hostPath": "/dev/null", "containerPath": NVIDIA_DEVICES_MOUNT})
    if args.shared_storage:
        training_mounts.append(
            {"hostPath": str(kind_shared_directory(args.name)), "containerPath": SHARED_STORAGE_PATH}
        )

    def node(role: str, mounts: list[dict[str, str]]) -> dict[str, Any]:
        spec: dict[str, Any] = {"role": role, "image": args.kind_node_image}
        if mounts:
            spec["extraMounts"] = mounts
        return spec

    if args.node_count == 1:
        nodes = [node("control-plane", training_mounts)]  # kind leaves a lone control plane schedulable
    else:
        nodes = [
            node("control-plane", []),
            *(node("worker", training_mounts) for _ in range(args.node_count)),
        ]
    config = {"kind": "Cluster", "apiVersion": "kind.x-k8s.io/v1alpha4", "nodes": nodes}
    return yaml.safe_dump(config, sort_keys=False)


def kind_create_script(gpu_passthrough: bool) -> str:
    """Creates the kind cluster named $KIND_CLUSTER from the config on stdin (reusing one that exists) and prints its kubeconfig.

    $SHARED_DIR, when set, is made world-writable first: the training pods (uid 1000) write checkpoints there.
    """
    checks = 'if [ -n "${SHARED_DIR:-}" ]; then mkdir -p "$SHARED_DIR" && chmod 0777 "$SHARED_DIR"; fi\n'
    if gpu_passthrough:
        # Fail with the fix instead of creating a cluster that silently has no GPU.
        checks += """if [ "$(docker info --format '{{.DefaultRuntime}}')" != nvidia ]; then
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


# Deletes the kind cluster and the directory its nodes shared.
KIND_DELETE_SCRIPT = """kind delete cluster --name "$KIND_CLUSTER"
if [ -n "${SHARED_DIR:-}" ]; then rm -rf "$SHARED_DIR"; fi
"""


def k3s_install_script(version: str, role: str, flags: list[str], *, join_url: str | None = None) -> str:
    """Installs (or upgrades) a pinned k3s server or agent; an agent reads the join token from stdin.

    A server waits for its API and prints its kubeconfig. POSIX sh, because a remote login shell may not be bash.
    The installer runs as the login user and calls sudo itself, so passwordless sudo is checked first.
    """
    lines = ["set -eu", require_root("installing k3s").rstrip("\n")]
    if join_url is not None:
        # The token comes on stdin so it never shows in a process list or the command text. `read` fails
        # at end of input when the last line has no newline: the token counts if anything was read.
        lines += [
            'IFS= read -r K3S_TOKEN || [ -n "${K3S_TOKEN:-}" ]',
            "export K3S_TOKEN",
            "export " + assign("K3S_URL", join_url),
        ]
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
    return f"if [ -x {uninstaller} ]; then\n{require_root('uninstalling k3s')}  {as_root(uninstaller)}\nfi\n"


# Drop the stack's line from /etc/exports and /etc/fstab (sed addresses with '#' as the delimiter).
_UNEXPORT = as_root(f"sed -i '\\#^{SHARED_STORAGE_PATH} #d' /etc/exports")
_UNMOUNT_AT_BOOT = as_root(f"sed -i '\\#[[:space:]]{SHARED_STORAGE_PATH}[[:space:]]#d' /etc/fstab")


def _apt_install(package: str) -> str:
    return as_root(f"env DEBIAN_FRONTEND=noninteractive apt-get install -y -q {package}") + " >&2"


def _replace_line(drop: str, line: str, file: str) -> str:
    """Drops the stack's earlier line from file (the sed `drop`), then appends line: re-runs leave one."""
    return f"{drop}\necho {shlex.quote(line)} | {as_root(f'tee -a {file}')} >/dev/null"


def nfs_export_script(clients: tuple[str, ...]) -> str:
    """On the k3s server: SHARED_STORAGE_PATH, world-writable, exported over NFS to the agents (Debian/Ubuntu)."""
    exports = " ".join(f"{client}(rw,sync,no_subtree_check)" for client in clients)
    return f"""set -eu
{require_root("sharing checkpoint storage over NFS")}{_apt_install("nfs-kernel-server")}
{as_root(f"install -d -m 0777 {SHARED_STORAGE_PATH}")}
{_replace_line(_UNEXPORT, f"{SHARED_STORAGE_PATH} {exports}", "/etc/exports")}
{as_root("exportfs -ra")}
"""


# On the k3s server, at destroy: stop exporting SHARED_STORAGE_PATH and remove it, checkpoints included.
NFS_UNEXPORT_SCRIPT = f"""set -eu
{require_root("removing the NFS checkpoint storage")}{_UNEXPORT}
{as_root("exportfs -ra")} || true
{as_root(f"rm -rf {SHARED_STORAGE_PATH}")}
"""


def nfs_mount_script(server: str) -> str:
    """On an agent: the server's NFS export mounted at SHARED_STORAGE_PATH, now and at boot (Debian/Ubuntu)."""
    fstab = f"{server}:{SHARED_STORAGE_PATH} {SHARED_STORAGE_PATH} nfs defaults,_netdev 0 0"
    return f"""set -eu
{require_root("mounting the NFS checkpoint storage")}{_apt_install("nfs-common")}
{as_root(f"install -d {SHARED_STORAGE_PATH}")}
{_replace_line(_UNMOUNT_AT_BOOT, fstab, "/etc/fstab")}
mountpoint -q {SHARED_STORAGE_PATH} || {as_root(f"mount {SHARED_STORAGE_PATH}")}
"""


# On an agent, at destroy: unmount the shared storage and forget it.
NFS_UNMOUNT_SCRIPT = f"""set -eu
{require_root("unmounting the NFS checkpoint storage")}if mountpoint -q {SHARED_STORAGE_PATH}; then {as_root(f"umount -l {SHARED_STORAGE_PATH}")}; fi
{_UNMOUNT_AT_BOOT}
"""


def docker_cluster_script(node_count: int, server_flags: list[str]) -> str:
    """Creates (or reuses) k3s in Docker: network, server, agents; waits for every node; prints the kubeconfig.

    Environment: CLUSTER (name, prefix of every object), NODE_IMAGE, AIRGAP_IMAGES (optional host directory),
    SHARED (1 to give every node the shared volume at SHARED_STORAGE_PATH). Every Docker object carries the
    cluster's label so that DOCKER_DELETE_SCRIPT removes them all. The API is published on a free loopback
    port of this machine; the kubeconfig points there.
    """
    agents = " ".join(f'"$CLUSTER-agent-{index}"' for index in range(1, node_count))
    return f"""set -euo pipefail
label="{DOCKER_CLUSTER_LABEL}=$CLUSTER"
server="$CLUSTER-server"
nodes=("$server" {agents})
running=$(docker ps -q --filter "label=$label" --filter status=running | wc -l)
if [ "$running" -eq "${{#nodes[@]}}" ]; then
  echo "k3s-in-Docker cluster $CLUSTER exists: reusing it" >&2
else
  # Leftovers of an earlier, incomplete attempt (or nodes removed behind the stack's back): start afresh.
  leftovers=$(docker ps -aq --filter "label=$label")
  if [ -n "$leftovers" ]; then docker rm -f -v $leftovers >/dev/null; fi
  docker network inspect "$CLUSTER" >/dev/null 2>&1 || docker network create --label "$label" "$CLUSTER" >/dev/null
  token=$(od -An -N24 -tx1 /dev/urandom | tr -d ' \\n')
  run_node() {{
    local name=$1
    shift
    docker volume create --label "$label" "$name-data" >/dev/null
    local mounts=(-v "$name-data:/var/lib/rancher/k3s")
    if [ -n "${{AIRGAP_IMAGES:-}}" ]; then mounts+=(-v "$AIRGAP_IMAGES:{K3S_AIRGAP_IMAGES}:ro"); fi
    if [ "${{SHARED:-0}}" = 1 ]; then mounts+=(-v "$CLUSTER-shared:{SHARED_STORAGE_PATH}"); fi
    docker run -d --name "$name" --hostname "$name" --label "$label" --network "$CLUSTER" \\
      --privileged --restart unless-stopped --tmpfs /run --tmpfs /var/run "${{mounts[@]}}" \\
      -e K3S_TOKEN="$token" "$@" >/dev/null
  }}
  if [ "${{SHARED:-0}}" = 1 ]; then
    docker volume create --label "$label" "$CLUSTER-shared" >/dev/null
    # The training pods run as uid 1000: the shared root must be writable for them.
    docker run --rm --entrypoint /bin/sh -v "$CLUSTER-shared:/shared" "$NODE_IMAGE" -c 'chmod 0777 /shared'
  fi
  run_node "$server" -p 127.0.0.1::{K3S_API_PORT} "$NODE_IMAGE" server {" ".join(map(shlex.quote, server_flags))}
  for agent in "${{nodes[@]:1}}"; do
    run_node "$agent" -e K3S_URL="https://$server:{K3S_API_PORT}" "$NODE_IMAGE" agent
  done
fi
deadline=$(( $(date +%s) + 300 ))
until [ "$(docker exec "$server" kubectl get nodes --no-headers 2>/dev/null | grep -cw Ready)" -ge "${{#nodes[@]}}" ]; do
  if [ "$(date +%s)" -ge "$deadline" ]; then
    echo "k3s-in-Docker cluster $CLUSTER: not all ${{#nodes[@]}} nodes are Ready after 300s:" >&2
    docker exec "$server" kubectl get nodes >&2 || docker logs --tail 30 "$server" >&2
    exit 1
  fi
  sleep 2
done
address=$(docker port "$server" {K3S_API_PORT}/tcp | head -n 1)
docker exec "$server" cat {K3S_KUBECONFIG} | sed "s#https://127.0.0.1:{K3S_API_PORT}#https://$address#"
"""


# Removes every container (with its anonymous volumes), volume and network of the k3s-in-Docker cluster.
DOCKER_DELETE_SCRIPT = f"""set -euo pipefail
label="{DOCKER_CLUSTER_LABEL}=$CLUSTER"
containers=$(docker ps -aq --filter "label=$label")
if [ -n "$containers" ]; then docker rm -f -v $containers >/dev/null; fi
volumes=$(docker volume ls -q --filter "label=$label")
if [ -n "$volumes" ]; then docker volume rm $volumes >/dev/null; fi
networks=$(docker network ls -q --filter "label=$label")
if [ -n "$networks" ]; then docker network rm $networks >/dev/null; fi
"""


def rewrite_kubeconfig_server(kubeconfig: str, server_url: str) -> str:
    """The kubeconfig with every cluster's API server set to server_url (k3s writes https://127.0.0.1:6443)."""
    document = yaml.safe_load(kubeconfig)
    for entry in document.get("clusters") or []:
        entry["cluster"]["server"] = server_url
    return yaml.safe_dump(document, sort_keys=False)


def k3s_server_flags(advertised_host: str | None) -> list[str]:
    """k3s server flags: a kubeconfig readable without sudo, no unneeded add-ons, and the remote address in the API certificate."""
    flags = ["--write-kubeconfig-mode=644", f"--disable={K3S_DISABLED}"]
    if advertised_host is not None:
        flags.append(f"--tls-san={advertised_host}")
    return flags


class Cluster(pulumi.ComponentResource):
    """A kind or k3s cluster, its kubeconfig (a secret) and the Kubernetes provider bound to it."""

    kubeconfig: pulumi.Output[str]
    provider: k8s.Provider
    # Changes whenever the nodes are created anew (a new cluster has none of the old one's images).
    identity: pulumi.Output[str]

    def __init__(self, name: str, args: ClusterArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("trainstack:index:Cluster", name, None, opts)
        nodes: list[pulumi.CustomResource]
        if args.kind == "kind":
            nodes, kubeconfig = self._kind(name, args)
        elif args.docker is not None:
            nodes, kubeconfig = self._k3s_docker(name, args, args.docker)
        elif args.remote is None:
            nodes, kubeconfig = self._k3s_local(name, args)
        else:
            nodes, kubeconfig = self._k3s_remote(name, args, args.remote)
        self.kubeconfig = pulumi.Output.secret(kubeconfig)
        # A replaced command gets a new id, so the ids of the node commands name this incarnation.
        self.identity = pulumi.Output.all(*(node.id for node in nodes)).apply(",".join)
        self.provider = k8s.Provider(
            f"{name}-provider",
            kubeconfig=self.kubeconfig,
            opts=pulumi.ResourceOptions(parent=self, depends_on=nodes),
        )
        self.register_outputs({"kubeconfig": self.kubeconfig, "clusterName": args.name})

    # Commands that print the kubeconfig or the node token log only stderr (logging=STDERR) and mark
    # stdout secret: neither may reach Pulumi's logs or state in plaintext.

    def _kind(self, name: str, args: ClusterArgs) -> tuple[list[pulumi.CustomResource], pulumi.Output[str]]:
        config = render_kind_config(args)
        environment = {"KIND_CLUSTER": args.name}
        if args.shared_storage:
            environment["SHARED_DIR"] = str(kind_shared_directory(args.name))
        create = local.Command(
            f"{name}-kind",
            create=kind_create_script(gpu_passthrough=args.gpus_per_node > 0),
            delete=KIND_DELETE_SCRIPT,
            stdin=config,
            interpreter=BASH,
            environment=environment,
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

    def _k3s_docker(
        self, name: str, args: ClusterArgs, docker: DockerNodes
    ) -> tuple[list[pulumi.CustomResource], pulumi.Output[str]]:
        environment = {
            "CLUSTER": args.name,
            "NODE_IMAGE": docker.image,
            "SHARED": str(int(args.shared_storage)),
        }
        if docker.airgap_images is not None:
            environment["AIRGAP_IMAGES"] = str(docker.airgap_images)
        create = local.Command(
            f"{name}-k3s-docker",
            create=docker_cluster_script(args.node_count, k3s_server_flags("127.0.0.1")),
            delete=DOCKER_DELETE_SCRIPT,
            interpreter=BASH,
            environment=environment,
            # Any change to the nodes (count, image, storage, name) is a new cluster: the old one goes first.
            triggers=[
                args.name,
                args.node_count,
                docker.image,
                environment.get("AIRGAP_IMAGES", ""),
                args.shared_storage,
                args.k3s_version,
            ],
            logging=local.Logging.STDERR,
            opts=pulumi.ResourceOptions(
                parent=self, additional_secret_outputs=["stdout"], delete_before_replace=True
            ),
        )
        return [create], create.stdout

    def _k3s_local(
        self, name: str, args: ClusterArgs
    ) -> tuple[list[pulumi.CustomResource], pulumi.Output[str]]:
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
    ) -> tuple[list[pulumi.CustomResource], pulumi.Output[str]]:
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
        # One line, newline-terminated, as `read` expects it.
        node_token: pulumi.Output[str] = pulumi.Output.secret(
            token.stdout.apply(lambda text: text.strip() + "\n")
        )
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
        nodes: list[pulumi.CustomResource] = [server, *agents]
        if args.shared_storage:
            nodes += self._nfs(name, hosts, connection, server, agents)
        kubeconfig = server.stdout.apply(lambda text: rewrite_kubeconfig_server(text, join_url))
        return nodes, kubeconfig

    def _nfs(
        self,
        name: str,
        hosts: RemoteHosts,
        connection: Any,
        server: remote.Command,
        agents: list[remote.Command],
    ) -> list[pulumi.CustomResource]:
        """The server's SHARED_STORAGE_PATH exported over NFS and mounted at the same path on every agent."""
        export = remote.Command(
            f"{name}-nfs-export",
            connection=connection(hosts.server),
            create=nfs_export_script(hosts.agents),
            delete=NFS_UNEXPORT_SCRIPT,
            triggers=[hosts.server, *hosts.agents],
            opts=pulumi.ResourceOptions(parent=self, depends_on=[server], delete_before_replace=True),
        )
        return [
            export,
            *(
                remote.Command(
                    f"{name}-nfs-mount-{index}",
                    connection=connection(host),
                    create=nfs_mount_script(hosts.server),
                    delete=NFS_UNMOUNT_SCRIPT,
                    triggers=[hosts.server, host],
                    opts=pulumi.ResourceOptions(
                        parent=self, depends_on=[export, agent], delete_before_replace=True
                    ),
                )
                for index, (host, agent) in enumerate(zip(hosts.agents, agents, strict=True))
            ),
        ]
