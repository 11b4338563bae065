"""The GPU rules of the stack settings (issue 23 cases 1, 3 and 4), each decided before anything is created."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from components.settings import StackConfigError
from components.stack import parse_settings
from tests.support.fake_apiserver import fake_api_server

UPSTREAM = Path(__file__).resolve().parent.parent / "upstream"


@pytest.fixture
def host_gpus(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """Sets how many GPUs nvidia-smi lists on this machine."""

    def set_count(count: int) -> None:
        # raising=False: on a tree without the check the tests still run (and fail on what they assert).
        monkeypatch.setattr("components.cluster_config.host_gpu_count", lambda: count, raising=False)

    set_count(8)
    yield set_count


def _visible_devices(node: dict[str, Any], devices_dir: str) -> set[str]:
    """The GPUs Docker's nvidia runtime gives a kind node, by nvkind's rule (pkg/nvkind/node.go,
    getNvidiaVisibleDevices): each /dev/null mount into the devices directory names one device, or all."""
    return {
        Path(mount["containerPath"]).name
        for mount in node.get("extraMounts", [])
        if mount["hostPath"] == "/dev/null" and str(Path(mount["containerPath"]).parent) == devices_dir
    }


@pytest.mark.parametrize("node_count", [1, 2, 3])
def test_kind_never_gives_one_gpu_to_two_nodes(host_gpus: Any, node_count: int) -> None:
    """Issue 23 case 3: a kind GPU stack either gives its nodes disjoint GPUs or is refused in one line."""
    from components.cluster.kind import render_kind_config

    node_go = (UPSTREAM / "nvkind" / "node.go").read_text()
    devices_dir = "/var/run/nvidia-container-devices"
    assert f'filepath.Dir(mount.ContainerPath) != "{devices_dir}"' in node_go
    values = {"clusterKind": "kind", "gpusPerNode": "1", "nodeCount": str(node_count)}
    try:
        settings = parse_settings(values)
    except StackConfigError as error:
        assert node_count > 1
        assert str(error).startswith(
            "trainstack:nodeCount: must be 1 when clusterKind is kind and gpusPerNode > 0"
        )
        return
    nodes = yaml.safe_load(render_kind_config(settings.cluster))["nodes"]
    given = [_visible_devices(node, devices_dir) for node in nodes]
    gpu_nodes = [devices for devices in given if devices]
    assert len(gpu_nodes) == node_count
    for index, devices in enumerate(gpu_nodes):
        for other in gpu_nodes[index + 1 :]:
            assert not devices & other and "all" not in devices | other


def test_kind_refuses_more_gpus_than_this_machine_has(host_gpus: Any) -> None:
    host_gpus(1)
    with pytest.raises(
        StackConfigError,
        match=r"^trainstack:gpusPerNode: must be at most the GPUs of this machine.*lists 1\), got 2$",
    ):
        parse_settings({"clusterKind": "kind", "gpusPerNode": "2"})
    host_gpus(0)
    with pytest.raises(StackConfigError, match="lists 0"):
        parse_settings({"clusterKind": "kind", "gpusPerNode": "1"})
    host_gpus(2)
    assert parse_settings({"clusterKind": "kind", "gpusPerNode": "2"}).cluster.gpus_per_node == 2


def test_kind_uses_the_hosts_driver(host_gpus: Any) -> None:
    with pytest.raises(
        StackConfigError, match=r"^trainstack:hostHasGpuDriver: must be true when clusterKind is kind"
    ):
        parse_settings({"clusterKind": "kind", "gpusPerNode": "1", "hostHasGpuDriver": "false"})


def test_time_slicing_with_several_gpus_per_pod_is_refused() -> None:
    """Issue 23 case 4: two slices of one GPU are not two GPUs."""
    with pytest.raises(
        StackConfigError, match=r"^trainstack:gpuTimeSlicingReplicas: must be 0 when gpusPerNode > 1"
    ):
        parse_settings({"clusterKind": "k3s", "gpusPerNode": "2", "gpuTimeSlicingReplicas": "2"})
    settings = parse_settings({"clusterKind": "k3s", "gpusPerNode": "1", "gpuTimeSlicingReplicas": "2"})
    assert settings.gpu is not None and settings.gpu.operator is not None
    assert settings.gpu.operator.time_slicing_replicas == 2


def test_gpu_operator_key_is_checked_even_on_cpu_stacks() -> None:
    with pytest.raises(
        StackConfigError, match=r"^trainstack:gpuOperator: must be one of auto, install, skip"
    ):
        parse_settings({"gpuOperator": "yes"})
    with pytest.raises(
        StackConfigError, match=r"^trainstack:gpuOperator: may be skip only when clusterKind is existing"
    ):
        parse_settings({"clusterKind": "k3s", "gpusPerNode": "1", "gpuOperator": "skip"})


# An existing cluster's answers (kube-apiserver's list and get shapes).
GPU_NODES = {"items": [{"metadata": {"name": "gpu-1"}, "status": {"allocatable": {"nvidia.com/gpu": "4"}}}]}
CLUSTER_POLICY = {
    "items": [{"metadata": {"name": "cluster-policy"}, "spec": {"operator": {"runtimeClass": "nvidia"}}}]
}
NVIDIA_CLASS = {"items": [{"metadata": {"name": "nvidia"}, "handler": "nvidia"}]}


def _existing(tmp_path: Path, objects: dict[str, Any], **values: str) -> Any:
    with fake_api_server(objects=objects) as server:
        config = {**server.stack_values(tmp_path), "gpusPerNode": "1", **values}
        return parse_settings(config, stack="trainstack.existing")


def test_an_existing_cluster_with_the_gpu_operator_is_used_as_it_is(tmp_path: Path) -> None:
    """Issue 23 case 1: nothing of the operator is installed where one runs; the pods name its RuntimeClass."""
    objects = {
        "/api/v1/nodes": GPU_NODES,
        "/apis/nvidia.com/v1/clusterpolicies": CLUSTER_POLICY,
        "/apis/node.k8s.io/v1/runtimeclasses": NVIDIA_CLASS,
        "/api/v1/namespaces/gpu-operator": {"metadata": {"name": "gpu-operator", "labels": {}}},
    }
    settings = _existing(tmp_path, objects)
    assert settings.gpu is not None and settings.gpu.operator is None
    assert settings.gpu.runtime_class == "nvidia"
    assert settings.gpu.summary == (
        "GPU Operator: not installed, using the cluster's GPU Operator (GPU nodes: gpu-1=4); pods name RuntimeClass nvidia"
    )
    with pytest.raises(
        StackConfigError, match=r"^trainstack:gpuOperator: install, but the cluster already runs"
    ):
        _existing(tmp_path, objects, gpuOperator="install")
    with pytest.raises(
        StackConfigError,
        match=r"^trainstack:gpuTimeSlicingReplicas: must be 0 when the stack does not install",
    ):
        _existing(tmp_path, objects, gpuTimeSlicingReplicas="2")


def test_a_managed_cluster_whose_nodes_advertise_gpus_needs_no_operator(tmp_path: Path) -> None:
    settings = _existing(
        tmp_path, {"/api/v1/nodes": GPU_NODES, "/apis/node.k8s.io/v1/runtimeclasses": {"items": []}}
    )
    assert settings.gpu is not None and settings.gpu.operator is None and settings.gpu.runtime_class is None


def test_an_existing_cluster_without_gpu_software_gets_the_operator(tmp_path: Path) -> None:
    settings = _existing(
        tmp_path, {"/api/v1/nodes": {"items": []}, "/apis/node.k8s.io/v1/runtimeclasses": {"items": []}}
    )
    assert settings.gpu is not None and settings.gpu.operator is not None
    assert settings.gpu.operator.owner == "trainstack.existing" and settings.gpu.runtime_class == "nvidia"


def test_check_stack_asks_an_existing_cluster_nothing_and_leaves_the_operator_to_up(tmp_path: Path) -> None:
    """parse_settings(ask_api_server=False), as check_stack runs it: the API server is not asked (no version,
    CRD or inventory), so gpuOperator auto is decided by `up`; install is still taken as said."""
    with fake_api_server(objects={"/api/v1/nodes": GPU_NODES}) as server:
        config = {**server.stack_values(tmp_path), "gpusPerNode": "1"}
        auto = parse_settings(config, ask_api_server=False)
        install = parse_settings({**config, "gpuOperator": "install"}, ask_api_server=False)
    assert server.requests == []
    assert auto.gpu is not None and (auto.gpu.operator, auto.gpu.runtime_class) == (None, None)
    assert auto.gpu.summary == "GPU Operator: decided by `up` from what the cluster offers (gpuOperator auto)"
    assert install.gpu is not None and install.gpu.operator is not None
