"""What every cluster kind is given and the one interface each implements (one module per kind).
upstream: kubernetes-sigs/kind pkg/cluster/internal/providers/provider.go @ v0.29.0 (the model).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import pulumi

from components.shell import KubeconfigFile

# Shared checkpoint storage of a multi-node cluster: the same directory on every node (a Docker volume in
# every k3s node container, a host directory in every kind node, an NFS export of the k3s server mounted on
# every remote agent), offered to the job as a ReadWriteMany hostPath PersistentVolume.
SHARED_STORAGE_PATH = "/var/lib/trainstack/shared"


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
class ExistingCluster:
    """A cluster the user already has, as its kubeconfig reaches it (see kubeconfig.py)."""

    # The kubeconfig reduced to one context, its cluster and user, with certificate files inline (YAML).
    kubeconfig: str
    # The context it uses (its current-context).
    context: str
    # The config key it came from (kubeconfig or kubeconfigPath), named by errors about it.
    source_key: str
    # The kubeconfig file's absolute path (kubeconfigPath), read again by every later run; "" for the secret.
    path: str = ""


@dataclass(frozen=True)
class ClusterArgs:
    """What cluster to create."""

    # "kind", "k3s" or "existing".
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
    # The user's cluster when kind is "existing"; None otherwise.
    existing: ExistingCluster | None = None


@dataclass(frozen=True)
class Provisioned:
    """What a cluster kind declared: its nodes and how to reach their API."""

    # The resources whose creation makes the nodes. The Kubernetes provider waits for them; their `delete`
    # is the kind's teardown; a replacement of any of them is a new cluster (see identity).
    nodes: list[pulumi.CustomResource]
    # The cluster's kubeconfig, as its command printed it (Cluster makes it a secret).
    kubeconfig: pulumi.Output[str]
    # What holds the shared checkpoint storage: resources no resize replaces, whose `delete` (the only one
    # that removes checkpoints) runs at destroy alone. The Kubernetes provider waits for them too.
    storage: list[pulumi.Resource] = field(default_factory=list)
    # A kubeconfig file the provider and the kubectl commands read whenever they run (destroy included)
    # instead of the kubeconfig above, which the state keeps as it was at the last `pulumi up`.
    kubeconfig_file: KubeconfigFile | None = None

    @property
    def identity(self) -> pulumi.Output[str]:
        """The node resources' ids: new whenever the nodes are (a new cluster has none of the old images)."""
        return pulumi.Output.all(*(node.id for node in self.nodes)).apply(",".join)


class ClusterProvider(ABC):
    """One cluster kind: its nodes (declared under the Cluster component), kubeconfig and shared storage.
    Teardown is the `delete` of every resource in Provisioned.nodes."""

    # What backs SHARED_STORAGE_PATH on every node when several nodes share the checkpoints and the stack
    # names no StorageClass; None when the kind cannot provide it (the stack must name a class).
    shared_storage: ClassVar[str | None]

    def __init__(self, args: ClusterArgs) -> None:
        self.args = args

    @abstractmethod
    def provision(self, name: str, parent: pulumi.Resource) -> Provisioned:
        """Declares the nodes under parent, resource names prefixed with name."""
