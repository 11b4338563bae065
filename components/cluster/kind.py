"""kind: Kubernetes nodes as Docker containers on this machine, made by the kind CLI."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pulumi
import yaml
from pulumi_command import local

from components.cluster.provider import SHARED_STORAGE_PATH, ClusterArgs, ClusterProvider, Provisioned
from components.cluster.scripts import cluster_script, shared_storage_command
from components.shell import BASH

# nvkind's GPU passthrough: a /dev/null mount here hands every GPU to the node container (with the toolkit's
# accept-nvidia-visible-devices-as-volume-mounts). One GPU node only: disjoint GPUs per node take nvkind's
# in-node surgery (upstream: NVIDIA/nvkind pkg/nvkind/node.go), which the stack does not do.
NVIDIA_DEVICES_MOUNT = "/var/run/nvidia-container-devices/all"
# Creates (or reuses) the cluster from the config on stdin and prints its kubeconfig.
CREATE_SCRIPT = cluster_script("kind_create.sh")
# Deletes the cluster (its shared directory stays).
DELETE_SCRIPT = cluster_script("kind_delete.sh")
# The shared checkpoint directory: made once, removed at destroy only (a command no config change replaces).
SHARED_CREATE_SCRIPT = cluster_script("kind_shared_create.sh")
SHARED_DELETE_SCRIPT = cluster_script("kind_shared_delete.sh")


def kind_shared_directory(cluster_name: str) -> Path:
    """The host directory a multi-node kind cluster shares into every node as SHARED_STORAGE_PATH."""
    return Path.home() / ".local" / "share" / "trainstack" / cluster_name / "shared"


def host_gpu_count() -> int:
    """The NVIDIA GPUs of this machine (the kind node's host), as nvidia-smi lists them; 0 without nvidia-smi."""
    if shutil.which("nvidia-smi") is None:
        return 0
    try:
        listed = subprocess.run(
            ["nvidia-smi", "--query-gpu=index", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return 0
    return len([line for line in listed.splitlines() if line.strip()])


def render_kind_config(args: ClusterArgs) -> str:
    """kind's cluster config: the nodes, their pinned image, nvkind's GPU mount and the shared directory.

    Raises ValueError for GPUs on more than one node (each would get every GPU of the host)."""
    if args.gpus_per_node and args.node_count > 1:
        raise ValueError("kind gives GPUs to one node only: every node would get all of the host's GPUs")
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


class Kind(ClusterProvider):
    """Creates: one `local.Command` running kind_create.sh with the rendered config on stdin; its stdout is
    `kind get kubeconfig`. kind publishes the API on a loopback port it picks once and pins in the control
    plane container's port binding, so the kubeconfig survives a restart of the container, Docker or the
    host (sigs.k8s.io/kind pkg/cluster/internal/providers/common/getport.go and docker/provision.go).
    Node identity: that command. Shared storage: a host directory mounted into every training node, made
    and removed by a command of its own with no triggers: any change of the config replaces the cluster
    (pulumi-command runs the old `delete` first), which must never take the checkpoints with it.
    Teardown: `kind delete cluster`, then the shared directory.
    """

    shared_storage = (
        "the host directory ~/.local/share/trainstack/<clusterName>/shared, mounted into every worker"
    )

    def provision(self, name: str, parent: pulumi.Resource) -> Provisioned:
        args = self.args
        config = render_kind_config(args)
        environment = {"KIND_CLUSTER": args.name}
        shared: list[pulumi.Resource] = []
        if args.shared_storage:
            directory = {"SHARED_DIR": str(kind_shared_directory(args.name))}
            shared.append(
                shared_storage_command(
                    f"{name}-kind-shared", parent, SHARED_CREATE_SCRIPT, SHARED_DELETE_SCRIPT, directory
                )
            )
        if args.gpus_per_node:
            environment["GPU_PASSTHROUGH"] = "1"
        create = local.Command(
            f"{name}-kind",
            create=CREATE_SCRIPT,
            delete=DELETE_SCRIPT,
            stdin=config,
            interpreter=BASH,
            environment=environment,
            # A changed environment alone would only re-run create (an update), leaving the cluster of the
            # old name behind: a new name, like a new config, replaces it.
            triggers=[config, args.name],
            # stdout is the kubeconfig: only stderr is logged, and stdout is a secret in the state.
            logging=local.Logging.STDERR,
            # A new config means a new cluster: delete the old one first, as both carry the same name.
            opts=pulumi.ResourceOptions(
                parent=parent,
                additional_secret_outputs=["stdout"],
                delete_before_replace=True,
                depends_on=shared,
            ),
        )
        return Provisioned(nodes=[create], kubeconfig=create.stdout, storage=shared)
