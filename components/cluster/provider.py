"""What every cluster kind is given and the one interface each implements (one module per kind).
upstream: kubernetes-sigs/kind pkg/cluster/internal/providers/provider.go @ v0.29.0 (the model)"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import pulumi

from components.shell import KubeconfigFile

# Shared checkpoint storage: the same directory on every node (Docker volume, host directory or NFS export),
# offered to the job as a ReadWriteMany hostPath PersistentVolume.
SHARED_STORAGE_PATH = "/var/lib/trainstack/shared"


@dataclass(frozen=True)
class RemoteHosts:
    """The hosts of a k3s cluster installed over SSH."""

    server: str  # SSH, and the Kubernetes API on port 6443
    agents: tuple[str, ...]  # joined to the server with its node token
    user: str  # needs passwordless sudo
    port: int
    private_key_path: Path  # for every host

    @property
    def all(self) -> tuple[str, ...]:
        return (self.server, *self.agents)


@dataclass(frozen=True)
class DockerNodes:
    """k3s nodes as Docker containers on this machine (like k3d): one server, nodeCount - 1 agents."""

    image: str  # the rancher/k3s tag of the k3s version, or a mirror of it
    airgap_images: Path | None = None  # host directory of archives every node imports at start


@dataclass(frozen=True)
class ExistingCluster:
    """A cluster the user already has, as its kubeconfig reaches it (see kubeconfig.py)."""

    kubeconfig: str  # reduced to one context, its cluster and user, certificate files inline (YAML)
    context: str  # its current-context
    source_key: str  # kubeconfig or kubeconfigPath, named by errors about it
    path: str = ""  # kubeconfigPath's absolute path, read again by every later run; "" for the secret


@dataclass(frozen=True)
class ClusterArgs:
    kind: str  # "kind", "k3s" or "existing"
    name: str  # of the kind cluster (k3s has none)
    node_count: int  # schedulable nodes; kind adds a control plane when above 1
    gpus_per_node: int  # above 0, kind mounts the host's GPUs into the nodes the nvkind way
    kind_node_image: str  # pins the Kubernetes version
    k3s_version: str  # installed by get.k3s.io
    remote: RemoteHosts | None = None  # None: k3s on this machine (or in Docker)
    docker: DockerNodes | None = None  # k3s nodes as Docker containers
    shared_storage: bool = False  # SHARED_STORAGE_PATH on every node (multi-node, no StorageClass given)
    existing: ExistingCluster | None = None  # the user's cluster when kind is "existing"


@dataclass(frozen=True)
class Provisioned:
    """What a cluster kind declared: its nodes and how to reach their API."""

    # Their `delete` is the teardown; replacing any is a new cluster (see identity).
    nodes: list[pulumi.CustomResource]
    kubeconfig: pulumi.Output[str]  # as its command printed it (Cluster makes it a secret)
    # Shared checkpoint storage: no resize replaces it; its `delete` (the only one that removes checkpoints)
    # runs at destroy alone.
    storage: list[pulumi.Resource] = field(default_factory=list)
    # Read whenever a provider or kubectl runs (destroy included), not the kubeconfig kept from the last `up`.
    kubeconfig_file: KubeconfigFile | None = None

    @property
    def identity(self) -> pulumi.Output[str]:
        """The node resources' ids: new with new nodes (which have none of the old images)."""
        return pulumi.Output.all(*(node.id for node in self.nodes)).apply(",".join)


@dataclass
class ClusterProvider(ABC):
    """One cluster kind: its nodes (declared under the Cluster component), kubeconfig and shared storage.
    Teardown is the `delete` of every resource in Provisioned.nodes."""

    # What backs SHARED_STORAGE_PATH; None: the kind cannot (the stack must name a StorageClass).
    shared_storage: ClassVar[str | None]
    args: ClusterArgs

    @abstractmethod
    def provision(self, name: str, parent: pulumi.Resource) -> Provisioned:
        """Declares the nodes under parent, resource names prefixed with name."""
