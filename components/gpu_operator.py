"""The NVIDIA GPU Operator (toolkit, device plugin, GPU discovery), or the GPUs an existing cluster already
offers: decided before anything is created (gpu_setup), with the RuntimeClass the training pods name."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, replace
from functools import partial
from typing import Any

import pulumi
import pulumi_kubernetes as k8s
import yaml

from components.settings import Values, at_least, error, one_of
from components.shell import kubectl_command, script

GPU_OPERATOR_NAMESPACE = "gpu-operator"
GPU_OPERATOR_REPOSITORY = "https://helm.ngc.nvidia.com/nvidia"
TIME_SLICING_CONFIG = "time-slicing-config"
# gpuOperator: auto installs the operator unless the cluster already offers GPUs; install and skip force it.
GPU_OPERATOR_MODES = ("auto", "install", "skip")
GPU_RESOURCE = "nvidia.com/gpu"
# Names the stack that installed the operator: a second `up` keeps its own, another's is used and left alone.
OWNER_LABEL = "trainstack.dev/gpu-operator-owner"
# k3s (and RKE2) run their own containerd: the toolkit edits that one's config and signals its socket.
K3S_CONTAINERD_CONFIG = "/var/lib/rancher/k3s/agent/etc/containerd/config.toml"
K3S_CONTAINERD_SOCKET = "/run/k3s/containerd/containerd.sock"
RKE2_CONTAINERD_CONFIG = "/var/lib/rancher/rke2/agent/etc/containerd/config.toml"
# An existing cluster's distribution, by its nodes' kubelet version (v1.33.6+k3s1, v1.33.6+rke2r1).
DISTRIBUTIONS = ("k3s", "rke2")
# upstream: NVIDIA/gpu-operator deployments/gpu-operator/values.yaml @ v25.10.1 (operator.runtimeClass)
RUNTIME_CLASS = "nvidia"
# The toolkit restarts the containerd it configures; the validator is Ready once a CUDA workload passed.
# upstream: NVIDIA/gpu-operator assets/state-*/0500_daemonset.yaml @ v25.10.1
TOOLKIT_DAEMONSET = "nvidia-container-toolkit-daemonset"
VALIDATOR_DAEMONSET = "nvidia-operator-validator"
# Wait for both DaemonSets (riding out k3s's restart); at delete, for the toolkit's cleanup to finish.
READY_SCRIPT = script("gpu_operator_ready.sh")
SETTLE_SCRIPT = script("gpu_operator_settle.sh")
READY_TIMEOUT_SECONDS = 900
# What gpu_setup asks an existing cluster (GET paths).
# upstream: NVIDIA/gpu-operator deployments/gpu-operator/crds/nvidia.com_clusterpolicies.yaml @ v25.10.1
INVENTORY_PATHS = {
    "nodes": "/api/v1/nodes",
    "clusterpolicies": "/apis/nvidia.com/v1/clusterpolicies",
    "runtimeclasses": "/apis/node.k8s.io/v1/runtimeclasses",
    "namespace": f"/api/v1/namespaces/{GPU_OPERATOR_NAMESPACE}",
}


@dataclass(frozen=True)
class GpuOperatorArgs:
    version: str
    cluster_kind: str  # where the toolkit finds containerd and its config
    install_driver: bool  # False when the hosts already have a driver
    time_slicing_replicas: int  # per physical GPU; 0: off
    owner: str = ""  # OWNER_LABEL's value (the stack's name)
    distribution: str = ""  # "k3s" or "rke2" when an existing cluster runs its own containerd


@dataclass(frozen=True)
class GpuInventory:
    """What GPU software an existing cluster already runs, as its API answered INVENTORY_PATHS."""

    gpu_nodes: Mapping[str, int]  # nodes advertising nvidia.com/gpu, with their allocatable count
    operator_runtime_class: str | None  # a ClusterPolicy's spec.operator.runtimeClass; None: no ClusterPolicy
    runtime_classes: frozenset[str]
    namespace_owner: str | None  # the gpu-operator Namespace's OWNER_LABEL; None: no namespace, "": no label
    distribution: str = ""  # "k3s" or "rke2" when a node's kubelet says so

    @property
    def has_operator(self) -> bool:
        return self.operator_runtime_class is not None


@dataclass(frozen=True)
class GpuSetup:
    operator: GpuOperatorArgs | None  # None: the cluster's own GPU software is used
    runtime_class: str | None  # the training pods'; None: the cluster's default runtime
    summary: str  # one line saying which, logged at every preview and update


def inventory_from_api(answers: Mapping[str, tuple[int, Any]]) -> GpuInventory | None:
    """From (HTTP status, JSON body) per INVENTORY_PATHS key; None on 401/403 (exec-plugin credentials, RBAC)."""
    if any(status in (401, 403) for status, _ in answers.values()):
        return None
    gpu_nodes: dict[str, int] = {}
    distribution = ""
    for node in answers["nodes"][1].get("items") or []:
        status = node.get("status", {})
        count = int((status.get("allocatable") or {}).get(GPU_RESOURCE, "0"))
        if count:
            gpu_nodes[node["metadata"]["name"]] = count
        kubelet = str((status.get("nodeInfo") or {}).get("kubeletVersion", ""))
        distribution = next((name for name in DISTRIBUTIONS if f"+{name}" in kubelet), distribution)
    operator_runtime_class = None
    status, body = answers["clusterpolicies"]
    policies = (body.get("items") or []) if status == 200 else []  # 404: the CRD is not there
    if policies:
        operator = policies[0].get("spec", {}).get("operator") or {}
        operator_runtime_class = operator.get("runtimeClass") or RUNTIME_CLASS
    classes = frozenset(item["metadata"]["name"] for item in answers["runtimeclasses"][1].get("items") or [])
    status, body = answers["namespace"]
    owner = None
    if status == 200:
        owner = str((body.get("metadata", {}).get("labels") or {}).get(OWNER_LABEL, ""))
    return GpuInventory(gpu_nodes, operator_runtime_class, classes, owner, distribution)


def gpu_setup(mode: str, args: GpuOperatorArgs, inventory: GpuInventory | None) -> GpuSetup:
    """inventory: an existing cluster's; None for one the stack creates or whose API would not tell."""
    refuse = partial(error, "gpuOperator")  # why it cannot be honoured and what to set
    installed = f"GPU Operator {args.version}: installed by the stack"
    if inventory is not None and inventory.distribution:
        args = replace(args, distribution=inventory.distribution)
        installed += f" (the nodes run {args.distribution}: the toolkit uses its containerd)"
    install = GpuSetup(args, RUNTIME_CLASS, installed)
    if args.cluster_kind != "existing":
        if mode == "skip":
            raise refuse(
                "may be skip only when clusterKind is existing: a cluster the stack creates has no device"
                " plugin but the operator's (allowed here: auto, install)"
            )
        return install
    if inventory is None:
        if mode == "auto":
            raise refuse(
                "auto cannot tell whether the cluster already offers GPUs (its API refused to list nodes,"
                " ClusterPolicies or RuntimeClasses with these credentials): set install or skip"
            )
        if mode == "install":
            return install
        return GpuSetup(
            None, None, "GPU Operator: not installed (gpuOperator skip); pods name no RuntimeClass"
        )
    if args.owner and inventory.namespace_owner == args.owner:  # a later `up` of the stack that installed it
        if mode == "skip":
            raise refuse(
                "may not be skip while this stack's own GPU Operator is installed: destroy the stack to remove"
                " it, or keep auto"
            )
        return install
    found = inventory.has_operator or bool(inventory.gpu_nodes)
    if mode == "install" or (mode == "auto" and not found):
        # The stack installs the operator unless something is in the way (for auto only the namespace can be).
        but = "install, but" if mode == "install" else "auto would install the GPU Operator, but"
        if inventory.has_operator:
            raise refuse(
                f"{but} the cluster already runs the GPU Operator (a ClusterPolicy exists): set auto or skip to"
                " use it"
            )
        if inventory.gpu_nodes:
            raise refuse(
                f"{but} nodes already advertise {GPU_RESOURCE} ({', '.join(sorted(inventory.gpu_nodes))}):"
                " another device plugin runs there; set auto or skip to use it"
            )
        if inventory.namespace_owner is not None:
            raise refuse(
                f"{but} the namespace {GPU_OPERATOR_NAMESPACE} exists and is not this stack's: delete it or set"
                " skip"
            )
        if mode == "install":
            return install
        return GpuSetup(
            args, RUNTIME_CLASS, f"{installed}; no node advertises {GPU_RESOURCE} and no ClusterPolicy exists"
        )
    wanted = inventory.operator_runtime_class or RUNTIME_CLASS
    runtime_class = wanted if wanted in inventory.runtime_classes else None
    pods = f"RuntimeClass {runtime_class}" if runtime_class else "no RuntimeClass"
    if not found:  # skip on a cluster with no GPU software yet: GPU pods wait for a node that offers GPUs
        return GpuSetup(
            None,
            runtime_class,
            f"GPU Operator: not installed (gpuOperator skip); the cluster has none and no node advertises"
            f" {GPU_RESOURCE} yet, so GPU pods stay Pending until one does; pods name {pods}",
        )
    what = "GPU Operator" if inventory.has_operator else f"{GPU_RESOURCE} device plugin"
    nodes = ", ".join(f"{name}={count}" for name, count in sorted(inventory.gpu_nodes.items()))
    summary = (
        f"GPU Operator: not installed, using the cluster's {what} (GPU nodes: {nodes or 'none yet'}); pods name"
        f" {pods}"
    )
    return GpuSetup(None, runtime_class, summary)


def gpu_operator_args(
    values: Values, *, cluster_kind: str, gpus_per_node: int, owner: str
) -> tuple[str, GpuOperatorArgs] | None:
    """gpuOperator's mode and the operator's Args; None on a CPU stack. owner: OWNER_LABEL's value."""
    replicas = at_least(values, "gpuTimeSlicingReplicas", 0)
    if replicas == 1:
        raise error("gpuTimeSlicingReplicas", "must be 0 (off) or >= 2, got 1")
    if replicas and gpus_per_node > 1:
        raise error(
            "gpuTimeSlicingReplicas",
            f"must be 0 when gpusPerNode > 1 (got {replicas} with gpusPerNode {gpus_per_node}): a pod"
            " asking for several time-sliced GPUs could get slices of one GPU; time-slice with gpusPerNode 1",
        )
    mode = one_of(values, "gpuOperator", list(GPU_OPERATOR_MODES))
    if not gpus_per_node:
        return None
    if cluster_kind == "kind" and not values["hostHasGpuDriver"]:
        raise error(
            "hostHasGpuDriver",
            "must be true when clusterKind is kind: the kind node uses this machine's NVIDIA driver, and the"
            " operator's driver container cannot load one from inside a node container",
        )
    version, install_driver = str(values["gpuOperatorVersion"]), not values["hostHasGpuDriver"]
    return mode, GpuOperatorArgs(version, cluster_kind, install_driver, replicas, owner=owner)


def checked_gpu_setup(
    mode: str, operator: GpuOperatorArgs, inventory: GpuInventory | None, decided_by_up: bool = False
) -> GpuSetup:
    """gpu_setup, time slicing checked against it. decided_by_up: the cluster was not asked (check_stack); auto waits."""
    if decided_by_up and mode == "auto":
        return GpuSetup(
            None, None, "GPU Operator: decided by `up` from what the cluster offers (gpuOperator auto)"
        )
    setup = gpu_setup(mode, operator, inventory)
    if setup.operator is None and operator.time_slicing_replicas:
        raise error(
            "gpuTimeSlicingReplicas",
            "must be 0 when the stack does not install the GPU Operator (the cluster's device plugin keeps its"
            f" own sharing config), got {operator.time_slicing_replicas}",
        )
    return setup


def time_slicing_config(replicas: int) -> str:
    """Each GPU advertised `replicas` times; asking for >1 slice refused (two slices of one GPU are not two GPUs).
    upstream: NVIDIA/k8s-device-plugin api/config/v1/replicas.go @ v0.18.1"""
    config = {
        "version": "v1",
        "flags": {"migStrategy": "none"},
        "sharing": {
            "timeSlicing": {
                "failRequestsGreaterThanOne": True,
                "resources": [{"name": GPU_RESOURCE, "replicas": replicas}],
            }
        },
    }
    return yaml.safe_dump(config, sort_keys=False)


def toolkit_env(cluster_kind: str, distribution: str = "") -> list[dict[str, str]]:
    """upstream: NVIDIA/gpu-operator controllers/object_controls.go @ v25.10.1 (the rest is forced under CDI)"""
    if distribution == "rke2" or "k3s" in (cluster_kind, distribution):
        # k3s rewrites its file at start and adds the `nvidia` runtime itself once the toolkit's binary exists.
        # upstream: k3s-io/k3s pkg/agent/containerd/nvidia.go @ v1.33.6+k3s1
        config = RKE2_CONTAINERD_CONFIG if distribution == "rke2" else K3S_CONTAINERD_CONFIG
        return [
            {"name": "CONTAINERD_CONFIG", "value": config},
            {"name": "CONTAINERD_SOCKET", "value": K3S_CONTAINERD_SOCKET},
        ]
    if cluster_kind == "kind":
        # The node's config.toml, not `containerd config dump`, whose version the toolkit misreads on 2.x.
        # upstream: NVIDIA/nvkind pkg/nvkind/node.go (--config-source=file)
        return [{"name": "RUNTIME_CONFIG_SOURCE", "value": "file"}]
    return []


def gpu_operator_values(args: GpuOperatorArgs) -> dict[str, Any]:
    values: dict[str, Any] = {
        "driver": {"enabled": args.install_driver},
        "operator": {"runtimeClass": RUNTIME_CLASS},
    }
    env = toolkit_env(args.cluster_kind, args.distribution)
    if env:
        values["toolkit"] = {"env": env}
    if args.time_slicing_replicas:
        values["devicePlugin"] = {"config": {"name": TIME_SLICING_CONFIG, "default": "any"}}
    return values


class GpuOperator(pulumi.ComponentResource):
    """The GPU Operator Helm release, its namespace, the time-slicing config and a readiness gate."""

    ready: pulumi.Resource

    def __init__(
        self,
        name: str,
        args: GpuOperatorArgs,
        *,
        kubeconfig: pulumi.Input[str],
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        super().__init__("trainstack:index:GpuOperator", name, None, opts)
        namespace = k8s.core.v1.Namespace(
            f"{name}-namespace",
            # The operator's pods mount host paths and run privileged.
            metadata={
                "name": GPU_OPERATOR_NAMESPACE,
                "labels": {"pod-security.kubernetes.io/enforce": "privileged", OWNER_LABEL: args.owner},
            },
            opts=pulumi.ResourceOptions(parent=self),
        )
        environment = {
            "NAMESPACE": GPU_OPERATOR_NAMESPACE,
            "DAEMONSETS": f"{TOOLKIT_DAEMONSET} {VALIDATOR_DAEMONSET}",
            "TOOLKIT_DAEMONSET": TOOLKIT_DAEMONSET,
            "TIMEOUT": str(READY_TIMEOUT_SECONDS),
        }
        # Created before the release, so deleted after it: its delete waits out the toolkit's cleanup.
        settle = kubectl_command(
            f"{name}-settle",
            kubeconfig=kubeconfig,
            script="true\n",
            delete=SETTLE_SCRIPT,
            environment=environment,
            opts=pulumi.ResourceOptions(parent=self, depends_on=[namespace]),
        )
        prerequisites: list[pulumi.Resource] = [namespace, settle]
        if args.time_slicing_replicas:
            prerequisites.append(
                k8s.core.v1.ConfigMap(
                    f"{name}-time-slicing",
                    metadata={"name": TIME_SLICING_CONFIG, "namespace": GPU_OPERATOR_NAMESPACE},
                    data={"any": time_slicing_config(args.time_slicing_replicas)},
                    opts=pulumi.ResourceOptions(parent=self, depends_on=[namespace]),
                )
            )
        # helm.v3.Release: a v4 Chart renders at preview, before the cluster exists (pulumi-kubernetes#3027).
        values = gpu_operator_values(args)
        release = k8s.helm.v3.Release(
            name,
            name="gpu-operator",
            chart="gpu-operator",
            version=args.version,
            repository_opts={"repo": GPU_OPERATOR_REPOSITORY},
            namespace=GPU_OPERATOR_NAMESPACE,
            values=values,
            timeout=900,
            opts=pulumi.ResourceOptions(parent=self, depends_on=prerequisites),
        )
        self.ready = kubectl_command(
            f"{name}-ready",
            kubeconfig=kubeconfig,
            script=READY_SCRIPT,
            environment=environment,
            # A new chart version or new values restart the toolkit: wait again.
            triggers=[args.version, json.dumps(values, sort_keys=True)],
            opts=pulumi.ResourceOptions(parent=self, depends_on=[release]),
        )
        self.register_outputs({"status": release.status})
