"""The Kubernetes cluster and the provider every Kubernetes resource uses. One module per cluster kind, each
a ClusterProvider (provider.py), its scripts beside it: kind.py, k3s_local.py, k3s_remote.py (SSH, NFS),
k3s_docker.py, existing.py (the user's cluster; kubeconfig.py checks it); k3s.py is what the k3s kinds share."""

from __future__ import annotations

import pulumi
import pulumi_kubernetes as k8s

from components.cluster.existing import Existing
from components.cluster.k3s_docker import K3sDocker
from components.cluster.k3s_local import K3sLocal
from components.cluster.k3s_remote import K3sRemote
from components.cluster.kind import Kind
from components.cluster.provider import ClusterArgs, ClusterProvider
from components.shell import KubeconfigFile


def provider_for(args: ClusterArgs) -> ClusterProvider:
    """Nothing is declared until its provision runs."""
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
    kubectl_kubeconfig: pulumi.Output[str] | KubeconfigFile  # the kubeconfig, or the user's file read at run
    provider: k8s.Provider
    identity: pulumi.Output[str]  # new with new nodes (which have none of the old one's images)

    def __init__(self, name: str, args: ClusterArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("trainstack:index:Cluster", name, None, opts)
        provisioned = provider_for(args).provision(name, self)
        self.kubeconfig = pulumi.Output.secret(provisioned.kubeconfig)
        self.identity = provisioned.identity
        file = provisioned.kubeconfig_file
        self.kubectl_kubeconfig = file or self.kubeconfig
        # A path is read whenever the provider starts, destroy included.
        self.provider = k8s.Provider(
            f"{name}-provider",
            kubeconfig=file.path if file else self.kubeconfig,
            context=file.context if file else None,
            opts=pulumi.ResourceOptions(parent=self, depends_on=[*provisioned.nodes, *provisioned.storage]),
        )
        self.register_outputs({"kubeconfig": self.kubeconfig, "clusterName": args.name})
