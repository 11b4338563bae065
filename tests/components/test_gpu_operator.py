"""The GPU Operator component: chart, k3s containerd paths, driver and time-slicing."""

from __future__ import annotations

import yaml

from components.gpu_operator import (
    GPU_OPERATOR_NAMESPACE,
    K3S_CONTAINERD_CONFIG,
    K3S_CONTAINERD_SOCKET,
    RUNTIME_CLASS,
    TIME_SLICING_CONFIG,
    GpuOperator,
    GpuOperatorArgs,
    gpu_operator_values,
    time_slicing_config,
)
from tests.stack_helpers import evaluate


def test_k3s_points_the_toolkit_at_k3s_containerd() -> None:
    values = gpu_operator_values(
        GpuOperatorArgs("v25.10.1", on_k3s=True, install_driver=False, time_slicing_replicas=0)
    )
    env = {item["name"]: item["value"] for item in values["toolkit"]["env"]}
    assert (
        env["CONTAINERD_CONFIG"]
        == K3S_CONTAINERD_CONFIG
        == "/var/lib/rancher/k3s/agent/etc/containerd/config.toml"
    )
    assert env["CONTAINERD_SOCKET"] == K3S_CONTAINERD_SOCKET == "/run/k3s/containerd/containerd.sock"
    assert values["driver"] == {"enabled": False}
    assert "devicePlugin" not in values


def test_the_operator_creates_the_runtime_class_that_gpu_pods_name() -> None:
    """Issue 18 case 6: the training pods name the RuntimeClass (RUNTIME_CLASS) the operator creates from its
    operator.runtimeClass value, so they keep the NVIDIA runtime when containerd's default reverts."""
    for on_k3s in (True, False):
        values = gpu_operator_values(
            GpuOperatorArgs("v25.10.1", on_k3s=on_k3s, install_driver=False, time_slicing_replicas=0)
        )
        assert values["operator"] == {"runtimeClass": RUNTIME_CLASS} and RUNTIME_CLASS == "nvidia"
    k3s = gpu_operator_values(
        GpuOperatorArgs("v25.10.1", on_k3s=True, install_driver=False, time_slicing_replicas=0)
    )
    assert {"name": "CONTAINERD_RUNTIME_CLASS", "value": RUNTIME_CLASS} in k3s["toolkit"]["env"]


def test_kind_keeps_the_toolkit_defaults_and_can_install_the_driver() -> None:
    values = gpu_operator_values(
        GpuOperatorArgs("v25.10.1", on_k3s=False, install_driver=True, time_slicing_replicas=0)
    )
    assert values == {"driver": {"enabled": True}, "operator": {"runtimeClass": "nvidia"}}


def test_time_slicing_config_shares_each_gpu() -> None:
    config = yaml.safe_load(time_slicing_config(4))
    assert config["sharing"]["timeSlicing"]["resources"] == [{"name": "nvidia.com/gpu", "replicas": 4}]


def test_component_installs_the_pinned_chart_after_its_config() -> None:
    args = GpuOperatorArgs("v25.10.1", on_k3s=True, install_driver=False, time_slicing_replicas=2)
    run = evaluate(lambda: GpuOperator("gpu", args))
    release = run.one("kubernetes:helm.sh/v3:Release")
    assert release.inputs["chart"] == "gpu-operator" and release.inputs["version"] == "v25.10.1"
    assert release.inputs["repositoryOpts"] == {"repo": "https://helm.ngc.nvidia.com/nvidia"}
    assert release.inputs["namespace"] == GPU_OPERATOR_NAMESPACE
    assert release.inputs["values"]["devicePlugin"]["config"] == {
        "name": TIME_SLICING_CONFIG,
        "default": "any",
    }
    config_map = run.one("kubernetes:core/v1:ConfigMap")
    assert config_map.inputs["metadata"] == {"name": TIME_SLICING_CONFIG, "namespace": GPU_OPERATOR_NAMESPACE}
    assert run.depends_on(release, config_map)
    assert run.depends_on(release, run.one("kubernetes:core/v1:Namespace"))


def test_component_without_time_slicing_has_no_config_map() -> None:
    args = GpuOperatorArgs("v25.10.1", on_k3s=False, install_driver=False, time_slicing_replicas=0)
    run = evaluate(lambda: GpuOperator("gpu", args))
    assert run.of_type("kubernetes:core/v1:ConfigMap") == []
