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
    GpuSetupError,
    gpu_operator_values,
    gpu_setup,
    inventory_from_api,
    time_slicing_config,
)
from tests.stack_helpers import evaluate

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


# --- the toolkit's environment (issue 23 case 6) --------------------------------------------------------------


def _go_constants(text: str) -> dict[str, str]:
    return dict(re.findall(r'^\s*(\w+)\s*=\s*"([^"]*)"', text, re.MULTILINE))


def _go_function(text: str, name: str) -> str:
    match = re.search(rf"^func {name}\(.*?^}}", text, re.MULTILINE | re.DOTALL)
    assert match, name
    return match.group(0)


def _set_env(body: str, constants: dict[str, str]) -> list[tuple[str, str]]:
    """setContainerEnv(container, NAME, value) calls of a Go function, names resolved, values as written."""
    calls = re.findall(r"setContainerEnv\(\w+, (\"\w+\"|\w+), ([^\n]+)\)\n", body)
    return [(name.strip('"') if name.startswith('"') else constants[name], value) for name, value in calls]


def _toolkit_sources() -> list[list[str]]:
    """Each toolkit installer flag's environment variables, in the order urfave/cli v3 tries them (the first
    one set wins)."""
    runtime = (UPSTREAM / "nvidia-container-toolkit" / "runtime.go").read_text()
    return [re.findall(r'"(\w+)"', group) for group in re.findall(r"cli\.EnvVars\(([^)]*)\)", runtime)]


def _ineffective(env: dict[str, str]) -> dict[str, str]:
    """The variables of env that the pinned operator and toolkit ignore, each with why.

    The operator builds the toolkit container's environment in this order (TransformToolkit): the CDI
    settings (the chart's cdi.enabled), then toolkit.env, then transformForRuntime, which reads some of them
    (getContainerEnv) and sets others (setContainerEnv) over what toolkit.env gave."""
    controls = (OPERATOR / "object_controls.excerpt.go").read_text()
    constants = _go_constants(controls)
    forced = dict(_set_env(_go_function(controls, "transformToolkitCtrForCDI"), constants))
    assert CHART_VALUES["cdi"]["enabled"] is True  # the stack leaves the chart's CDI default on
    for_runtime = "\n".join(
        _go_function(controls, name)
        for name in ("transformForRuntime", "getRuntimeConfigFiles", "getRuntimeSocketFile")
    )
    read_by_operator = set(re.findall(r'getContainerEnv\(\w+, "(\w+)"\)', for_runtime))
    set_by_operator = {name for name, _ in _set_env(for_runtime, constants)}
    present = {**forced, **env}
    why = {}
    for name in env:
        if name in read_by_operator:
            continue
        if name in set_by_operator:
            why[name] = "the operator sets it itself after toolkit.env"
            continue
        sources = next((group for group in _toolkit_sources() if name in group), None)
        if sources is None:
            why[name] = "no toolkit flag reads it"
            continue
        winner = next(source for source in sources if source in present)
        if winner != name:
            why[name] = f"{winner}={present[winner]} wins over it"
    return why


def test_the_upstream_reading_finds_the_dead_settings_it_should() -> None:
    """The check itself: the values the stack set before issue 23 were two dead settings."""
    old = {
        "CONTAINERD_CONFIG": K3S_CONTAINERD_CONFIG,
        "CONTAINERD_SOCKET": K3S_CONTAINERD_SOCKET,
        "CONTAINERD_RUNTIME_CLASS": RUNTIME_CLASS,
        "CONTAINERD_SET_AS_DEFAULT": "true",
    }
    assert set(_ineffective(old)) == {"CONTAINERD_RUNTIME_CLASS", "CONTAINERD_SET_AS_DEFAULT"}
    assert "NVIDIA_RUNTIME_SET_AS_DEFAULT" in _ineffective(old)["CONTAINERD_SET_AS_DEFAULT"]


@pytest.mark.parametrize("kind", ["k3s", "kind", "existing"])
def test_every_toolkit_setting_takes_effect(kind: str) -> None:
    """Issue 23 case 6: no toolkit variable the stack sets is overridden by the pinned operator or toolkit."""
    assert _ineffective(env_of(gpu_operator_values(args(kind)))) == {}


def test_k3s_points_the_toolkit_at_k3s_containerd() -> None:
    env = env_of(gpu_operator_values(args("k3s")))
    assert env == {"CONTAINERD_CONFIG": K3S_CONTAINERD_CONFIG, "CONTAINERD_SOCKET": K3S_CONTAINERD_SOCKET}


def test_kind_reads_the_nodes_containerd_config_file_as_nvkind_does() -> None:
    """nvkind configures its nodes with --config-source=file; the operator's toolkit does the same on kind."""
    node = (UPSTREAM / "nvkind" / "node.go").read_text()
    assert "nvidia-ctk runtime configure --runtime=containerd --config-source=file" in node
    assert env_of(gpu_operator_values(args("kind"))) == {"RUNTIME_CONFIG_SOURCE": "file"}
    config_source = next(group for group in _toolkit_sources() if "RUNTIME_CONFIG_SOURCE" in group)
    assert "RUNTIME_CONFIG_SOURCES" in config_source  # nobody sets the plural: ours is read


def test_existing_clusters_keep_the_toolkit_defaults_and_can_install_the_driver() -> None:
    values = gpu_operator_values(
        GpuOperatorArgs("v25.10.1", cluster_kind="existing", install_driver=True, time_slicing_replicas=0)
    )
    assert values == {"driver": {"enabled": True}, "operator": {"runtimeClass": "nvidia"}}


# --- the device plugin's time-slicing config (issue 23 case 4) ------------------------------------------------


def _go_structs() -> dict[str, dict[str, str]]:
    """The device plugin config's Go structs: JSON field name -> Go type; an embedded struct under ''."""
    text = "\n".join(path.read_text() for path in sorted((UPSTREAM / "k8s-device-plugin").glob("*.go")))
    structs = {}
    for name, body in re.findall(r"^type (\w+) struct \{\n(.*?)^\}", text, re.MULTILINE | re.DOTALL):
        fields = {}
        for line in body.splitlines():
            tagged = re.match(r'\s*\w+\s+\*?(\[\])?(\w+)\s+`json:"(\w+)', line)
            embedded = re.match(r"\s*(\w+)\s*$", line)
            if tagged:
                fields[tagged.group(3)] = tagged.group(2)
            elif embedded:
                fields[""] = embedded.group(1)
        structs[name] = fields
    return structs


def _unknown_keys(
    document: Any, struct: str, structs: dict[str, dict[str, str]], where: str = ""
) -> list[str]:
    fields = dict(structs.get(struct, {}))
    while "" in fields:  # an embedded struct's fields are the outer one's
        fields |= structs[fields.pop("")]
    unknown = []
    items = document if isinstance(document, list) else [document]
    for item in items:
        if not isinstance(item, dict):
            continue
        for key, value in item.items():
            if key not in fields:
                unknown.append(f"{where}{key}")
            else:
                unknown += _unknown_keys(value, fields[key], structs, f"{where}{key}.")
    return unknown


def test_time_slicing_config_fits_the_device_plugins_schema_and_refuses_several_slices() -> None:
    config = yaml.safe_load(time_slicing_config(4))
    structs = _go_structs()
    assert _unknown_keys(config, "Config", structs) == []
    assert structs["ReplicatedResources"]["failRequestsGreaterThanOne"] == "bool"
    sharing = config["sharing"]["timeSlicing"]
    assert sharing["failRequestsGreaterThanOne"] is True
    assert sharing["resources"] == [{"name": "nvidia.com/gpu", "replicas": 4}]


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


def test_a_cluster_without_gpu_software_gets_the_operator() -> None:
    setup = gpu_setup("auto", args("existing"), inventory())
    assert setup.operator == args("existing") and setup.runtime_class == RUNTIME_CLASS
    assert "installed by the stack" in setup.summary


def test_the_stacks_own_operator_is_kept_on_a_later_up() -> None:
    ours = inventory({"n1": 1}, "nvidia", ("nvidia",), owner="trainstack.gpu")
    assert gpu_setup("auto", args("existing"), ours).operator is not None
    with pytest.raises(GpuSetupError, match="this stack's own GPU Operator"):
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
    with pytest.raises(GpuSetupError, match=message):
        gpu_setup(mode, args(kind), found)


def test_clusters_the_stack_creates_always_get_the_operator() -> None:
    for kind in ("k3s", "kind"):
        for mode in ("auto", "install"):
            setup = gpu_setup(mode, args(kind), None)
            assert setup.operator == args(kind) and setup.runtime_class == RUNTIME_CLASS


def _unknown_values(ours: Any, chart: Any, where: str = "") -> list[str]:
    """Paths of ours that the chart's values.yaml does not have (lists and scalars are leaves)."""
    if not isinstance(ours, dict):
        return []
    unknown = []
    for key, value in ours.items():
        if not isinstance(chart, dict) or key not in chart:
            unknown.append(f"{where}{key}")
        else:
            unknown += _unknown_values(value, chart[key], f"{where}{key}.")
    return unknown


@pytest.mark.parametrize("kind", ["k3s", "kind", "existing"])
def test_every_chart_value_the_stack_sets_is_one_of_the_charts(kind: str) -> None:
    """A misspelt value is silently ignored by Helm: each one the stack sets must be in the chart's values."""
    values = gpu_operator_values(
        GpuOperatorArgs("v25.10.1", cluster_kind=kind, install_driver=True, time_slicing_replicas=2)
    )
    assert _unknown_values(values, CHART_VALUES) == []
    assert isinstance(CHART_VALUES["toolkit"]["env"], list)
