"""The Kubernetes cluster and the provider every Kubernetes resource uses.

One module per cluster kind, each a ClusterProvider (provider.py), its shell scripts next to it:

| kind | module | scripts |
| --- | --- | --- |
| kind | kind.py | kind_create.sh, kind_delete.sh |
| k3s on this machine | k3s_local.py | k3s_install.sh, k3s_uninstall.sh (k3s.py, shared by the k3s kinds) |
| k3s over SSH, NFS storage | k3s_remote.py | the k3s scripts, k3s_remote_token.sh, k3s_remote_nfs_*.sh |
| k3s in Docker | k3s_docker.py | k3s_docker_create.sh, k3s_docker_delete.sh |
| the user's own cluster | existing.py | none (kubeconfig.py reads and checks the kubeconfig) |

Scripts that act as root start with components/root.sh (as_root, require_root), shared with the
other components; scripts.py reads them.
"""

from __future__ import annotations

import pulumi
import pulumi_kubernetes as k8s

from components.cluster.existing import Existing, ask_api
from components.cluster.k3s_docker import DOCKER_CLUSTER_LABEL, K3sDocker
from components.cluster.k3s_local import K3sLocal
from components.cluster.k3s_remote import K3sRemote
from components.cluster.kind import Kind, host_gpu_count
from components.cluster.kubeconfig import (
    KubeconfigError,
    check_api_server,
    read_custom_resource_definition,
    read_kubeconfig,
)
from components.cluster.provider import (
    SHARED_STORAGE_PATH,
    ClusterArgs,
    ClusterProvider,
    DockerNodes,
    ExistingCluster,
    RemoteHosts,
)
from components.shell import KubeconfigFile

__all__ = [
    "DOCKER_CLUSTER_LABEL",
    "SHARED_STORAGE_PATH",
    "Cluster",
    "ClusterArgs",
    "DockerNodes",
    "ExistingCluster",
    "KubeconfigError",
    "RemoteHosts",
    "ask_api",
    "check_api_server",
    "host_gpu_count",
    "provider_for",
    "read_custom_resource_definition",
    "read_kubeconfig",
]


def provider_for(args: ClusterArgs) -> ClusterProvider:
    """The cluster kind the args ask for (nothing is declared until its provision runs)."""
    if args.kind == "kind":
        return Kind(args)
    if args.existing is not None:
        return Existing(args, args.existing)
    if args.docker is not None:
        return K3sDocker(args, args.docker)
    if args.remote is not None:
        return K3sRemote(args, args.remote)
    return K3sLocal(args)


class Cluster(pulumi.ComponentResource):
    """A cluster of any kind, its kubeconfig (a secret) and the Kubernetes provider bound to it."""

    kubeconfig: pulumi.Output[str]
    # What the stack's kubectl commands use: the kubeconfig, or the user's file read when they run.
    kubectl_kubeconfig: pulumi.Output[str] | KubeconfigFile
    provider: k8s.Provider
    # Changes whenever the nodes are created anew (a new cluster has none of the old one's images).
    identity: pulumi.Output[str]

    def __init__(self, name: str, args: ClusterArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("trainstack:index:Cluster", name, None, opts)
        provisioned = provider_for(args).provision(name, self)
        self.kubeconfig = pulumi.Output.secret(provisioned.kubeconfig)
        self.identity = provisioned.identity
        file = provisioned.kubeconfig_file
        self.kubectl_kubeconfig = file or self.kubeconfig
        # pulumi-kubernetes reads a kubeconfig given as a path when it starts, destroy included.
        self.provider = k8s.Provider(
            f"{name}-provider",
            kubeconfig=file.path if file else self.kubeconfig,
            context=file.context if file else None,
            opts=pulumi.ResourceOptions(parent=self, depends_on=[*provisioned.nodes, *provisioned.storage]),
        )
        self.register_outputs({"kubeconfig": self.kubeconfig, "clusterName": args.name})
