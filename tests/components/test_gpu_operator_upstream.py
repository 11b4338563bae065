"""The GPU Operator's values and the device plugin config, held against the pinned upstream files in
tests/upstream (see its README): the chart's values.yaml, the operator's toolkit transform
(controllers/object_controls.go), the toolkit installer's flags and the device plugin's config structs."""

from __future__ import annotations

import re
from typing import Any

import pytest
import yaml

from components.gpu_operator import (
    K3S_CONTAINERD_CONFIG,
    K3S_CONTAINERD_SOCKET,
    RUNTIME_CLASS,
    GpuOperatorArgs,
    gpu_operator_values,
    time_slicing_config,
)
from tests.components.test_gpu_operator import CHART_VALUES, OPERATOR, UPSTREAM, args, env_of

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


@pytest.mark.parametrize(
    ("kind", "distribution"), [("k3s", ""), ("kind", ""), ("existing", ""), ("existing", "rke2")]
)
def test_every_toolkit_setting_takes_effect(kind: str, distribution: str) -> None:
    """Issue 23 case 6: no toolkit variable the stack sets is overridden by the pinned operator or toolkit."""
    operator = GpuOperatorArgs("v25.10.1", kind, False, 0, distribution=distribution)
    assert _ineffective(env_of(gpu_operator_values(operator))) == {}


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
