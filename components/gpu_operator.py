"""The NVIDIA GPU Operator: container toolkit, device plugin and GPU discovery on every node."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pulumi
import pulumi_kubernetes as k8s
import yaml

GPU_OPERATOR_NAMESPACE = "gpu-operator"
GPU_OPERATOR_REPOSITORY = "https://helm.ngc.nvidia.com/nvidia"
TIME_SLICING_CONFIG = "time-slicing-config"
# k3s runs its own containerd: the toolkit must edit that one's config and talk to that one's socket.
K3S_CONTAINERD_CONFIG = "/var/lib/rancher/k3s/agent/etc/containerd/config.toml"
K3S_CONTAINERD_SOCKET = "/run/k3s/containerd/containerd.sock"
# The RuntimeClass the operator creates for its containerd runtime handler (chart value operator.runtimeClass,
# gpu-operator v25.10.1 deployments/gpu-operator/values.yaml; the operator also names the toolkit's
# CONTAINERD_RUNTIME_CLASS after it). GPU pods name it, so they get the NVIDIA runtime even where containerd's
# default runtime is not (k3s rewrites its containerd config on restart and upgrade).
RUNTIME_CLASS = "nvidia"


@dataclass(frozen=True)
class GpuOperatorArgs:
    """How to install the GPU Operator."""

    # Helm chart version.
    version: str
    # The cluster is k3s: point the container toolkit at k3s's containerd.
    on_k3s: bool
    # Let the operator run its driver container; False when the hosts already have a driver.
    install_driver: bool
    # Time-slicing replicas per physical GPU; 0 leaves each GPU to one pod.
    time_slicing_replicas: int


def time_slicing_config(replicas: int) -> str:
    """The device plugin's sharing config: every nvidia.com/gpu advertised `replicas` times."""
    config = {
        "version": "v1",
        "flags": {"migStrategy": "none"},
        "sharing": {"timeSlicing": {"resources": [{"name": "nvidia.com/gpu", "replicas": replicas}]}},
    }
    return yaml.safe_dump(config, sort_keys=False)


def gpu_operator_values(args: GpuOperatorArgs) -> dict[str, Any]:
    """The chart values for these args."""
    values: dict[str, Any] = {
        "driver": {"enabled": args.install_driver},
        "operator": {"runtimeClass": RUNTIME_CLASS},
    }
    if args.on_k3s:
        values["toolkit"] = {
            "env": [
                {"name": "CONTAINERD_CONFIG", "value": K3S_CONTAINERD_CONFIG},
                {"name": "CONTAINERD_SOCKET", "value": K3S_CONTAINERD_SOCKET},
                {"name": "CONTAINERD_RUNTIME_CLASS", "value": RUNTIME_CLASS},
                # nvidia also as containerd's default runtime, for pods that name no RuntimeClass (the
                # operator's own); the training pods name RUNTIME_CLASS and do not depend on it.
                {"name": "CONTAINERD_SET_AS_DEFAULT", "value": "true"},
            ]
        }
    if args.time_slicing_replicas:
        values["devicePlugin"] = {"config": {"name": TIME_SLICING_CONFIG, "default": "any"}}
    return values


class GpuOperator(pulumi.ComponentResource):
    """The GPU Operator Helm release, its namespace and (optionally) the time-slicing config."""

    release: k8s.helm.v3.Release
    # The RuntimeClass GPU pods name (created by the operator).
    runtime_class: str = RUNTIME_CLASS

    def __init__(self, name: str, args: GpuOperatorArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("trainstack:index:GpuOperator", name, None, opts)
        namespace = k8s.core.v1.Namespace(
            f"{name}-namespace",
            # The operator's pods mount host paths and run privileged.
            metadata={
                "name": GPU_OPERATOR_NAMESPACE,
                "labels": {"pod-security.kubernetes.io/enforce": "privileged"},
            },
            opts=pulumi.ResourceOptions(parent=self),
        )
        prerequisites: list[pulumi.Resource] = [namespace]
        if args.time_slicing_replicas:
            prerequisites.append(
                k8s.core.v1.ConfigMap(
                    f"{name}-time-slicing",
                    metadata={"name": TIME_SLICING_CONFIG, "namespace": GPU_OPERATOR_NAMESPACE},
                    data={"any": time_slicing_config(args.time_slicing_replicas)},
                    opts=pulumi.ResourceOptions(parent=self, depends_on=[namespace]),
                )
            )
        # helm.v3.Release, not helm.v4.Chart: a v4 Chart renders at preview through a provider whose
        # kubeconfig is still unknown when this stack creates the cluster, and fails
        # (pulumi/pulumi-kubernetes#3027, open). A Release installs during the update, once the cluster exists.
        self.release = k8s.helm.v3.Release(
            name,
            name="gpu-operator",
            chart="gpu-operator",
            version=args.version,
            repository_opts={"repo": GPU_OPERATOR_REPOSITORY},
            namespace=GPU_OPERATOR_NAMESPACE,
            values=gpu_operator_values(args),
            timeout=900,
            opts=pulumi.ResourceOptions(parent=self, depends_on=prerequisites),
        )
        self.register_outputs({"status": self.release.status})
