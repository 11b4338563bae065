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

# A /dev/null mount here hands every GPU to the node container; one GPU node only (disjoint GPUs per node
# take nvkind's in-node surgery). upstream: NVIDIA/nvkind pkg/nvkind/node.go
NVIDIA_DEVICES_MOUNT = "/var/run/nvidia-container-devices/all"
CREATE_SCRIPT = cluster_script("kind_create.sh")
DELETE_SCRIPT = cluster_script("kind_delete.sh")
SHARED_CREATE_SCRIPT = cluster_script("kind_shared_create.sh")
SHARED_DELETE_SCRIPT = cluster_script("kind_shared_delete.sh")


def kind_shared_directory(cluster_name: str) -> Path:
    """Shared into every node as SHARED_STORAGE_PATH."""
    return Path.home() / ".local" / "share" / "trainstack" / cluster_name / "shared"


def host_gpu_count() -> int:
    """This machine's NVIDIA GPUs as nvidia-smi lists them; 0 without it."""
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
    """kind's cluster config; ValueError for GPUs on more than one node (each would get them all)."""
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
    """Creates: one `local.Command` running kind_create.sh (config on stdin, kubeconfig on stdout; kind pins the
    API port, so it survives restarts). Node identity: that command. Shared storage: a host directory made
    and removed by a command with no triggers, so a config change (a new cluster) keeps the checkpoints.
    Teardown: `kind delete cluster`, then the shared directory."""

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
            triggers=[
                config,
                args.name,
            ],  # a new name replaces the cluster (an update would leave the old one)
            logging=local.Logging.STDERR,  # stdout is the kubeconfig, a secret in the state
            opts=pulumi.ResourceOptions(
                parent=parent,
                additional_secret_outputs=["stdout"],
                delete_before_replace=True,
                depends_on=shared,
            ),
        )
        return Provisioned(nodes=[create], kubeconfig=create.stdout, storage=shared)
