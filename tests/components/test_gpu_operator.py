"""The GPU Operator component, held against the pinned upstream files in tests/upstream (see its README):
the chart's values and ClusterPolicy CRD, the operator's DaemonSets and toolkit transform, the toolkit's flags,
the device plugin's config schema."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from components.gpu_operator import (
    GPU_OPERATOR_NAMESPACE,
    INVENTORY_PATHS,
    K3S_CONTAINERD_CONFIG,
    K3S_CONTAINERD_SOCKET,
    OWNER_LABEL,
    RUNTIME_CLASS,
    TIME_SLICING_CONFIG,
    TOOLKIT_DAEMONSET,
    VALIDATOR_DAEMONSET,
    GpuInventory,
    GpuOperator,
    GpuOperatorArgs,
    gpu_operator_values,
    gpu_setup,
    inventory_from_api,
)
from components.settings import StackConfigError
from tests.support.shell_stubs import run_file, stub_tools
from tests.support.stack_helpers import evaluate

UPSTREAM = Path(__file__).resolve().parent.parent / "upstream"
OPERATOR = UPSTREAM / "gpu-operator"
CHART_VALUES = yaml.safe_load((OPERATOR / "values.yaml").read_text())


def args(kind: str = "k3s", replicas: int = 0, owner: str = "trainstack.gpu") -> GpuOperatorArgs:
    return GpuOperatorArgs(
        "v25.10.1", cluster_kind=kind, install_driver=False, time_slicing_replicas=replicas, owner=owner
    )


def env_of(values: dict[str, Any]) -> dict[str, str]:
    return {item["name"]: item["value"] for item in values.get("toolkit", {}).get("env", [])}


# --- the chart and the operator (v25.10.1) ------------------------------------------------------------------


def test_the_pinned_chart_is_the_one_in_tests_upstream() -> None:
    """The chart's images are the toolkit and device plugin whose files tests/upstream holds."""
    pinned = yaml.safe_load((Path(__file__).resolve().parents[2] / "Pulumi.yaml").read_text())
    assert pinned["config"]["gpuOperatorVersion"]["default"] == "v25.10.1"
    assert CHART_VALUES["toolkit"]["version"] == "v1.18.1"
    assert CHART_VALUES["devicePlugin"]["version"] == "v0.18.1"


def test_the_operator_creates_the_runtime_class_that_gpu_pods_name() -> None:
    """operator.runtimeClass is the chart's own default and the ClusterPolicy carries it."""
    assert CHART_VALUES["operator"]["runtimeClass"] == RUNTIME_CLASS
    assert (
        "runtimeClass: {{ .Values.operator.runtimeClass }}" in (OPERATOR / "clusterpolicy.yaml").read_text()
    )
    for kind in ("k3s", "kind", "existing"):
        assert gpu_operator_values(args(kind))["operator"] == {"runtimeClass": RUNTIME_CLASS}


def test_the_probe_asks_for_clusterpolicies_where_the_crd_serves_them() -> None:
    """Issue 23 case 1: the ClusterPolicy the chart installs is cluster-scoped with a fixed name (a second
    install on a cluster that has one fails), so the stack asks for it where its CRD serves it."""
    crd = yaml.safe_load((OPERATOR / "nvidia.com_clusterpolicies.yaml").read_text())
    served = [version["name"] for version in crd["spec"]["versions"] if version["served"]]
    spec = crd["spec"]
    assert spec["scope"] == "Cluster"
    assert INVENTORY_PATHS["clusterpolicies"] in [
        f"/apis/{spec['group']}/{version}/{spec['names']['plural']}" for version in served
    ]
    template = yaml.safe_load(
        "\n".join(
            line
            for line in (OPERATOR / "clusterpolicy.yaml").read_text().splitlines()[:4]
            if "{{" not in line
        )
    )
    assert template == {
        "apiVersion": "nvidia.com/v1",
        "kind": "ClusterPolicy",
        "metadata": {"name": "cluster-policy"},
    }
    schema = spec["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]["operator"]
    assert "runtimeClass" in schema["properties"]


def _daemonset(name: str) -> dict[str, Any]:
    return yaml.safe_load((OPERATOR / name).read_text())


def test_the_readiness_gate_waits_for_the_operators_own_daemonsets() -> None:
    """Issue 23 case 5: the names the gate waits for are those of the operator's toolkit and validator."""
    toolkit = _daemonset("state-container-toolkit-0500_daemonset.yaml")
    validator = _daemonset("state-operator-validation-0500_daemonset.yaml")
    assert toolkit["metadata"]["name"] == TOOLKIT_DAEMONSET
    assert (
        toolkit["spec"]["template"]["metadata"]["labels"]["app"] == TOOLKIT_DAEMONSET
    )  # the settle's selector
    assert validator["metadata"]["name"] == VALIDATOR_DAEMONSET
    # The validator's pod is Ready only after its init containers validated the toolkit and the plugin.
    init = [container["name"] for container in validator["spec"]["template"]["spec"]["initContainers"]]
    assert {"toolkit-validation", "plugin-validation"} <= set(init)
    # The toolkit restarts the containerd it configures by signal: k3s's containerd is k3s's child.
    containerd = (UPSTREAM / "nvidia-container-toolkit" / "containerd.go").read_text()
    assert re.search(r'DefaultRestartMode\s*=\s*"signal"', containerd)


def test_component_gates_what_follows_on_the_operator_and_settles_after_it() -> None:
    run = evaluate(lambda: GpuOperator("gpu", args(replicas=2), kubeconfig="kubeconfig: fake"))
    release = run.one("kubernetes:helm.sh/v3:Release")
    assert release.inputs["chart"] == "gpu-operator" and release.inputs["version"] == "v25.10.1"
    assert release.inputs["repositoryOpts"] == {"repo": "https://helm.ngc.nvidia.com/nvidia"}
    assert release.inputs["namespace"] == GPU_OPERATOR_NAMESPACE
    ready = run.one("command:local:Command", "gpu-ready")
    settle = run.one("command:local:Command", "gpu-settle")
    assert run.depends_on(ready, release)
    # Created before the release, so destroyed after it: its delete waits out the toolkit's cleanup.
    assert run.depends_on(release, settle) and "get pods -l" in settle.inputs["delete"]
    assert ready.inputs["environment"]["DAEMONSETS"] == f"{TOOLKIT_DAEMONSET} {VALIDATOR_DAEMONSET}"
    namespace = run.one("kubernetes:core/v1:Namespace")
    assert namespace.inputs["metadata"]["labels"][OWNER_LABEL] == "trainstack.gpu"
    config_map = run.one("kubernetes:core/v1:ConfigMap")
    assert config_map.inputs["metadata"] == {"name": TIME_SLICING_CONFIG, "namespace": GPU_OPERATOR_NAMESPACE}
    assert run.depends_on(release, config_map) and run.depends_on(release, namespace)


def test_component_without_time_slicing_has_no_config_map() -> None:
    run = evaluate(lambda: GpuOperator("gpu", args("kind"), kubeconfig="kubeconfig: fake"))
    assert run.of_type("kubernetes:core/v1:ConfigMap") == []


# --- what an existing cluster already runs (issue 23 case 1) -------------------------------------------------


def inventory(
    gpu_nodes: dict[str, int] | None = None,
    operator: str | None = None,
    classes: tuple[str, ...] = (),
    owner: str | None = None,
) -> GpuInventory:
    return GpuInventory(gpu_nodes or {}, operator, frozenset(classes), owner)


def test_inventory_reads_nodes_clusterpolicies_runtime_classes_and_the_namespace() -> None:
    answers = {
        "nodes": (
            200,
            {
                "items": [
                    {"metadata": {"name": "gpu-1"}, "status": {"allocatable": {"nvidia.com/gpu": "8"}}},
                    {"metadata": {"name": "cpu-1"}, "status": {"allocatable": {"cpu": "4"}}},
                ]
            },
        ),
        "clusterpolicies": (
            200,
            {"items": [{"metadata": {"name": "cluster-policy"}, "spec": {"operator": {}}}]},
        ),
        "runtimeclasses": (200, {"items": [{"metadata": {"name": "nvidia"}, "handler": "nvidia"}]}),
        "namespace": (404, {}),
    }
    found = inventory_from_api(answers)
    assert found == inventory({"gpu-1": 8}, RUNTIME_CLASS, ("nvidia",), None)
    assert inventory_from_api({**answers, "clusterpolicies": (404, {})}) == inventory(
        {"gpu-1": 8}, None, ("nvidia",)
    )
    assert inventory_from_api({**answers, "nodes": (403, {})}) is None


def test_an_existing_operator_is_used_with_its_runtime_class() -> None:
    setup = gpu_setup("auto", args("existing"), inventory({"n1": 4}, "nvidia", ("nvidia",)))
    assert setup.operator is None and setup.runtime_class == "nvidia"
    assert setup.summary.startswith("GPU Operator: not installed, using the cluster's GPU Operator")
    skipped = gpu_setup("skip", args("existing"), inventory({}, "nvidia-cdi", ("nvidia",)))
    assert skipped.operator is None and skipped.runtime_class is None  # the class it names is not there


def test_a_managed_device_plugin_is_used_without_a_runtime_class() -> None:
    setup = gpu_setup("auto", args("existing"), inventory({"pool-a-1": 1}))
    assert setup.operator is None and setup.runtime_class is None
    assert "nvidia.com/gpu device plugin" in setup.summary and "pool-a-1=1" in setup.summary


def test_skip_on_a_cluster_with_no_gpu_software_says_so_instead_of_naming_a_device_plugin() -> None:
    setup = gpu_setup("skip", args("existing"), inventory())
    assert setup.operator is None and setup.runtime_class is None
    assert setup.summary == (
        "GPU Operator: not installed (gpuOperator skip); the cluster has none and no node advertises"
        " nvidia.com/gpu yet, so GPU pods stay Pending until one does; pods name no RuntimeClass"
    )


def test_an_existing_k3s_or_rke2_cluster_gets_the_toolkit_pointed_at_its_own_containerd() -> None:
    """The whole kind of case 6: an existing cluster may be k3s or RKE2, whose containerd is their own."""
    node = {"metadata": {"name": "n1"}, "status": {"nodeInfo": {"kubeletVersion": "v1.33.6+rke2r1"}}}
    answers = {
        "nodes": (200, {"items": [node]}),
        "clusterpolicies": (404, {}),
        "runtimeclasses": (200, {"items": []}),
        "namespace": (404, {}),
    }
    found = inventory_from_api(answers)
    assert found is not None and found.distribution == "rke2"
    setup = gpu_setup("auto", args("existing"), found)
    assert setup.operator is not None and "the nodes run rke2" in setup.summary
    assert env_of(gpu_operator_values(setup.operator)) == {
        "CONTAINERD_CONFIG": "/var/lib/rancher/rke2/agent/etc/containerd/config.toml",
        "CONTAINERD_SOCKET": K3S_CONTAINERD_SOCKET,
    }
    k3s = GpuInventory({}, None, frozenset(), None, "k3s")
    operator = gpu_setup("install", args("existing"), k3s).operator
    assert (
        operator is not None
        and env_of(gpu_operator_values(operator))["CONTAINERD_CONFIG"] == K3S_CONTAINERD_CONFIG
    )


def test_a_cluster_without_gpu_software_gets_the_operator() -> None:
    setup = gpu_setup("auto", args("existing"), inventory())
    assert setup.operator == args("existing") and setup.runtime_class == RUNTIME_CLASS
    assert "installed by the stack" in setup.summary


def test_the_stacks_own_operator_is_kept_on_a_later_up() -> None:
    ours = inventory({"n1": 1}, "nvidia", ("nvidia",), owner="trainstack.gpu")
    assert gpu_setup("auto", args("existing"), ours).operator is not None
    with pytest.raises(StackConfigError, match="this stack's own GPU Operator"):
        gpu_setup("skip", args("existing"), ours)


@pytest.mark.parametrize(
    ("mode", "kind", "found", "message"),
    [
        ("install", "existing", inventory({}, "nvidia"), "already runs the GPU Operator"),
        ("install", "existing", inventory({"n1": 1}), "another device plugin"),
        ("install", "existing", inventory(owner="someone.else"), "namespace gpu-operator exists"),
        ("auto", "existing", inventory(owner=""), "namespace gpu-operator exists"),
        ("auto", "existing", None, "cannot tell"),
        ("skip", "k3s", None, "only when clusterKind is existing"),
        ("skip", "kind", None, "only when clusterKind is existing"),
    ],
)
def test_gpu_operator_choices_that_cannot_work_are_refused(
    mode: str, kind: str, found: GpuInventory | None, message: str
) -> None:
    with pytest.raises(StackConfigError, match=message):
        gpu_setup(mode, args(kind), found)


def test_clusters_the_stack_creates_always_get_the_operator() -> None:
    for kind in ("k3s", "kind"):
        for mode in ("auto", "install"):
            setup = gpu_setup(mode, args(kind), None)
            assert setup.operator == args(kind) and setup.runtime_class == RUNTIME_CLASS


# --- the readiness gate and the settle wait, run with a stub kubectl (issue 23 case 5) -------------------------

# kubectl answers from a script of looks (one line per call, counted in $HOME/looks): "down" fails as a
# restarting API server does, anything else is printed. sleep returns at once; date counts 5 s per call.
GATE_STUBS = {
    "kubectl": """looks=$(cat "$HOME/looks" 2>/dev/null || echo 0); echo $((looks + 1)) > "$HOME/looks"
answer=$(sed -n "$((looks + 1))p" "$HOME/answers")
[ -z "$answer" ] && answer=$(tail -n 1 "$HOME/answers")
if [ "$answer" = down ]; then echo "connection refused" >&2; exit 1; fi
if [ "$answer" = empty ]; then exit 0; fi
echo "$answer\"""",
    "sleep": "exit 0",
    "date": """now=$(cat "$HOME/now" 2>/dev/null || echo 0); echo $((now + 5)) > "$HOME/now"; echo "$now\"""",
}
GATE_ENV = {
    "NAMESPACE": GPU_OPERATOR_NAMESPACE,
    "DAEMONSETS": f"{TOOLKIT_DAEMONSET} {VALIDATOR_DAEMONSET}",
    "TOOLKIT_DAEMONSET": TOOLKIT_DAEMONSET,
    "TIMEOUT": "120",
}


def _gate(tmp_path: Path, name: str, answers: list[str]) -> Any:
    environment, log = stub_tools(tmp_path, GATE_STUBS)
    (tmp_path / "answers").write_text("\n".join(answers) + "\n")
    return run_file(name, {**environment, **GATE_ENV}, check=False), log


def test_the_gate_rides_out_the_restart_and_needs_three_ready_looks_in_a_row(tmp_path: Path) -> None:
    # Toolkit, then validator, per look: not there yet, the API away (k3s restarting), ready, away again,
    # then ready for good.
    answers = ["empty", "down", "1 1 1", "1 1 1", "down", *["1 1 1"] * 6]
    result, log = _gate(tmp_path, "gpu_operator_ready.sh", answers)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("GPU Operator is ready")
    looks = [line for line in log.read_text().splitlines() if line.startswith("kubectl")]
    assert looks[0].startswith(
        f"kubectl -n gpu-operator get daemonset {TOOLKIT_DAEMONSET} --ignore-not-found"
    )
    assert len(looks) == len(answers)  # each answer used once: the gate stopped at the third ready look


def test_the_gate_gives_up_with_one_line_at_its_timeout(tmp_path: Path) -> None:
    result, _ = _gate(tmp_path, "gpu_operator_ready.sh", ["1 0 1"])
    assert result.returncode == 1
    assert result.stderr == (
        f"GPU Operator not ready after 120s: {TOOLKIT_DAEMONSET}: 1 0 1 (desired ready updated);"
        " see kubectl -n gpu-operator get pods\n"
    )


def test_the_settle_waits_for_the_toolkit_pods_to_go_and_the_api_to_stay(tmp_path: Path) -> None:
    # (pods, readyz) per look: a toolkit pod still there, then gone but the API away, then steady.
    answers = ["pod/toolkit-1", "empty", "down", *["empty"] * 6]
    result, log = _gate(tmp_path, "gpu_operator_settle.sh", answers)
    assert result.returncode == 0, result.stderr
    looks = [line for line in log.read_text().splitlines() if line.startswith("kubectl")]
    assert looks[0].startswith(f"kubectl -n gpu-operator get pods -l app={TOOLKIT_DAEMONSET}")
    assert looks[-1].startswith("kubectl get --raw /readyz") and len(looks) == len(answers)
