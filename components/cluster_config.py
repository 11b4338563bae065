"""The cluster's Args from the stack's config: the kind, its nodes and hosts."""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from components.cluster import provider_for
from components.cluster.kind import host_gpu_count
from components.cluster.kubeconfig import KubeconfigError, read_kubeconfig
from components.cluster.provider import ClusterArgs, DockerNodes, ExistingCluster, RemoteHosts
from components.settings import DNS_LABEL, DNS_LABEL_RULE, Values, at_least, error, matching, one_of, port

T = TypeVar("T")
K3S_VERSION = re.compile(r"^v[0-9]+\.[0-9]+\.[0-9]+\+k3s[0-9]+$")
K3S_IMAGE_REPOSITORY = "rancher/k3s"
# RFC 1123 labels, the last not all digits (RFC 1123 2.1: that is an address, and 192.0.2.011 no valid one)
HOST_NAME = re.compile(
    r"(?=.{1,253}$)(?!(?:.*\.)?[0-9]+$)[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
    r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*"
)
USER_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,31}")


def _host(key: str, value: str, where: str = "") -> str:
    """A host name (RFC 1123) or IPv4 address (an IPv6 one would need brackets in the join URL and NFS mount)."""
    try:
        ipaddress.IPv4Address(value)
    except ValueError:
        if not HOST_NAME.fullmatch(value):
            raise error(key, f"{where}must be a host name or IPv4 address, got {value!r}") from None
    return value


def _remote_hosts(values: Values, node_count: int) -> RemoteHosts:
    server = str(values["k3sServerHost"]).strip()
    if not server:
        raise error(
            "k3sServerHost",
            "must name the k3s server's address when k3sMode is remote (allowed: a host name or IPv4 address)",
        )
    _host("k3sServerHost", server)
    agents = tuple(
        _host("k3sAgentHosts", str(host).strip(), f"entry {i}: ")
        for i, host in enumerate(values["k3sAgentHosts"])
    )
    names = [host.lower() for host in (server, *agents)]  # host names ignore case
    if twice := sorted({host for host in agents if names.count(host.lower()) > 1}):
        raise error(
            "k3sAgentHosts", f"must name each host once, the server included; {twice[0]} is there twice"
        )
    if node_count > 1 + len(agents):
        raise error(
            "nodeCount",
            f"must be at most the number of remote hosts (k3sServerHost + k3sAgentHosts = {1 + len(agents)}), got {node_count}",
        )
    key_path = Path(os.path.expanduser(str(values["sshPrivateKeyPath"])))  # pathlib's raises for ~unknown
    if not key_path.is_file():
        raise error("sshPrivateKeyPath", f"must be an existing private key file, {key_path} does not exist")
    ssh_port = port(values, "sshPort", off=False)
    user = matching(values, "sshUser", USER_NAME, "a user name (letters, digits, '_', '.', '-'; at most 32)")
    return RemoteHosts(server, agents, user, ssh_port, key_path)


def _docker_nodes(values: Values, gpus_per_node: int) -> DockerNodes:
    if gpus_per_node:
        raise error(
            "gpusPerNode",
            f"must be 0 when k3sMode is docker (its nodes get no GPU), got {gpus_per_node};"
            " for GPUs use k3sMode local or remote, or clusterKind kind",
        )
    # The official image tag of a k3s release spells '+' as '-' (v1.33.6+k3s1 -> v1.33.6-k3s1).
    image = str(values["k3sImage"]) or f"{K3S_IMAGE_REPOSITORY}:{str(values['k3sVersion']).replace('+', '-')}"
    airgap_images: Path | None = None
    if values["k3sAirgapImages"]:
        airgap_images = Path(os.path.expanduser(str(values["k3sAirgapImages"]))).resolve()
        if not airgap_images.is_dir():
            raise error(
                "k3sAirgapImages",
                f"must be an existing directory of image archives (docker save), {airgap_images} is not one",
            )
    return DockerNodes(image=image, airgap_images=airgap_images)


def asked(question: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """An existing cluster's kubeconfig or answer, a KubeconfigError as a StackConfigError."""
    try:
        return question(*args, **kwargs)
    except KubeconfigError as failure:
        raise error(failure.key, failure.problem) from None


def _kind_gpus(node_count: int, gpus_per_node: int) -> None:
    """kind shares this machine's GPUs with one node."""
    if node_count > 1:
        raise error(
            "nodeCount",
            f"must be 1 when clusterKind is kind and gpusPerNode > 0 (every kind node would get all of this"
            f" machine's GPUs), got {node_count}; for several GPU nodes use k3sMode remote or clusterKind existing",
        )
    available = host_gpu_count()
    if gpus_per_node > available:
        raise error(
            "gpusPerNode",
            f"must be at most the GPUs of this machine, which the kind node shares (nvidia-smi lists"
            f" {available}), got {gpus_per_node}",
        )


def cluster_args(values: Values, kubeconfig: str | None = None) -> ClusterArgs:
    """kubeconfig: the `kubeconfig` secret's plaintext (existing)."""
    kind = one_of(values, "clusterKind", ["kind", "k3s", "existing"])
    node_count = at_least(values, "nodeCount", 1)
    gpus_per_node = at_least(values, "gpusPerNode", 0)
    remote: RemoteHosts | None = None
    docker: DockerNodes | None = None
    existing: ExistingCluster | None = None
    if kind == "existing":
        path, context = str(values["kubeconfigPath"]), str(values["kubeContext"])
        existing = asked(read_kubeconfig, secret=kubeconfig, path=path, context=context)
    if kind == "k3s":
        matching(values, "k3sVersion", K3S_VERSION, "a k3s release such as v1.33.6+k3s1")
        mode = one_of(values, "k3sMode", ["local", "remote", "docker"])
        if mode == "remote":
            remote = _remote_hosts(values, node_count)
        elif mode == "docker":
            docker = _docker_nodes(values, gpus_per_node)
        elif node_count != 1:
            raise error(
                "nodeCount",
                f"must be 1 when k3sMode is local (one machine), got {node_count}; use k3sMode remote or docker for more nodes",
            )
    if remote is None and (hosts := [key for key in ("k3sServerHost", "k3sAgentHosts") if values[key]]):
        where = f"k3sMode is {values['k3sMode']}" if kind == "k3s" else f"clusterKind is {kind}"
        raise error(
            hosts[0], f"is set while {where}: only k3sMode remote uses it; set k3sMode remote or remove it"
        )
    if kind == "kind" and gpus_per_node:
        _kind_gpus(node_count, gpus_per_node)
    args = ClusterArgs(
        kind=kind,
        name=matching(values, "clusterName", DNS_LABEL, DNS_LABEL_RULE),
        node_count=node_count,
        gpus_per_node=gpus_per_node,
        kind_node_image=str(values["kindNodeImage"]),
        k3s_version=str(values["k3sVersion"]),
        remote=remote,
        docker=docker,
        existing=existing,
    )
    # On the cluster's shared storage unless a class is named, whatever nodeCount: a resize resumes from it.
    provided = provider_for(args).shared_storage is not None
    args = dataclasses.replace(args, shared_storage=provided and not values["checkpointStorageClass"])
    if node_count > 1 and not values["checkpointStorageClass"] and not provided:
        raise error(
            "checkpointStorageClass",
            f"must name a ReadWriteMany StorageClass of the cluster when clusterKind is {kind} and nodeCount > 1"
            " (the stack provides no shared storage on it), got ''",
        )
    return args
