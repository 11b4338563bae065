"""kind: the rendered config, kind_create.sh and kind_delete.sh under a stub kind, and the component."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pulumi
import pytest
import yaml

from components.cluster import Cluster
from components.cluster.kind import (
    CREATE_SCRIPT,
    DELETE_SCRIPT,
    NVIDIA_DEVICES_MOUNT,
    host_gpu_count,
    kind_shared_directory,
    render_kind_config,
)
from components.cluster.provider import SHARED_STORAGE_PATH, ClusterArgs
from tests.components.cluster.stubs import calls, run, stub_tools
from tests.support.stack_helpers import contains_secret, evaluate

IMAGE = "kindest/node:v1.33.1"


def kind_args(node_count: int = 1, gpus: int = 0, shared: bool = False) -> ClusterArgs:
    return ClusterArgs("kind", "demo", node_count, gpus, IMAGE, "v1.33.6+k3s1", shared_storage=shared)


def test_single_node_kind_cluster_is_one_control_plane() -> None:
    config = yaml.safe_load(render_kind_config(kind_args()))
    assert config["apiVersion"] == "kind.x-k8s.io/v1alpha4"
    assert config["nodes"] == [{"role": "control-plane", "image": IMAGE}]


def test_the_config_text_is_the_same_for_the_same_cluster(monkeypatch: pytest.MonkeyPatch) -> None:
    """The config's text is a trigger of the kind command: text that changes for the same args (key order,
    spelling, layout) would delete and re-create the user's cluster on the next `pulumi up`, so this text is
    pinned as it is, the workers' shared mount list written once and aliased. kind reads it with
    go.yaml.in/yaml/v3, which resolves aliases, and accepts only `kind: Cluster` for kind.x-k8s.io/v1alpha4
    (sigs.k8s.io/kind pkg/internal/apis/config/encoding/load.go, Parse)."""
    monkeypatch.setenv("HOME", "/home/ops")
    assert render_kind_config(kind_args(node_count=2, gpus=0, shared=True)) == (
        "kind: Cluster\n"
        "apiVersion: kind.x-k8s.io/v1alpha4\n"
        "nodes:\n"
        "- role: control-plane\n"
        "  image: kindest/node:v1.33.1\n"
        "- role: worker\n"
        "  image: kindest/node:v1.33.1\n"
        "  extraMounts: &id001\n"
        "  - hostPath: /home/ops/.local/share/trainstack/demo/shared\n"
        "    containerPath: /var/lib/trainstack/shared\n"
        "- role: worker\n"
        "  image: kindest/node:v1.33.1\n"
        "  extraMounts: *id001\n"
    )


def test_gpu_kind_cluster_mounts_the_gpus_into_its_one_node() -> None:
    """Issue 23 case 3: several workers would each get all of the host's GPUs, so GPUs go to one node only."""
    nodes = yaml.safe_load(render_kind_config(kind_args(node_count=1, gpus=1)))["nodes"]
    assert nodes == [
        {
            "role": "control-plane",
            "image": IMAGE,
            "extraMounts": [{"hostPath": "/dev/null", "containerPath": NVIDIA_DEVICES_MOUNT}],
        }
    ]
    with pytest.raises(ValueError) as raised:
        render_kind_config(kind_args(node_count=2, gpus=1))
    assert (
        str(raised.value) == "kind gives GPUs to one node only: every node would get all of the host's GPUs"
    )


# nvidia-smi stubs: (its sh body, the GPUs counted). It lists one index a line only when asked exactly so.
NVIDIA_SMI = [
    ('[ "$*" = "--query-gpu=index --format=csv,noheader" ] && printf "0\\n1\\n\\n2\\n" || exit 9', 3),
    ('[ "$*" = "--query-gpu=index --format=csv,noheader" ] && echo 0 || exit 9', 1),
    ("exit 0", 0),
    ("echo 'NVIDIA-SMI has failed because it could not communicate with the NVIDIA driver'; exit 9", 0),
]


@pytest.mark.parametrize(("body", "count"), NVIDIA_SMI)
def test_the_host_s_gpus_are_the_lines_nvidia_smi_lists(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, body: str, count: int
) -> None:
    environment, _ = stub_tools(tmp_path, {"nvidia-smi": body})
    monkeypatch.setenv("PATH", environment["PATH"])
    assert host_gpu_count() == count


def test_no_nvidia_smi_is_no_gpu_and_a_hung_one_is_given_up(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # no nvidia-smi on it
    assert host_gpu_count() == 0
    environment, _ = stub_tools(tmp_path, {"nvidia-smi": "echo 0"})
    monkeypatch.setenv("PATH", environment["PATH"])
    asked: list[float | None] = []

    def hung(*args: object, timeout: float | None = None, **kwargs: object) -> None:
        asked.append(timeout)
        raise subprocess.TimeoutExpired("nvidia-smi", timeout or 0)

    monkeypatch.setattr("components.cluster.kind.subprocess.run", hung)
    assert host_gpu_count() == 0
    assert asked and asked[0] is not None and asked[0] <= 60  # a preview never waits forever on it


def fake_kind(
    tmp_path: Path, clusters: str = "", default_runtime: str = "nvidia"
) -> tuple[dict[str, str], Path]:
    return stub_tools(
        tmp_path,
        {
            "kind": f"""case "$1 $2" in
  "get clusters") printf '{clusters}' ;;
  "get kubeconfig") echo "kubeconfig of $4" ;;
esac""",
            "docker": f"echo {default_runtime}",
        },
    )


def test_kind_create_makes_a_cluster_from_the_config_on_stdin_and_prints_its_kubeconfig(
    tmp_path: Path,
) -> None:
    environment, log = fake_kind(tmp_path, clusters="other\\n")
    users = tmp_path / "users-kubeconfig"
    result = run(
        CREATE_SCRIPT,
        {**environment, "KIND_CLUSTER": "demo", "KUBECONFIG": str(users)},
        stdin="kind: Cluster\n",
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == "kubeconfig of demo\n"
    first, create, last = calls(log)
    assert (first, last) == ("kind get clusters", "kind get kubeconfig --name demo")
    # The admin credentials go to a private file of the script's own, removed, not the user's KUBECONFIG
    # (which pulumi-command passes on from the user's shell).
    prefix = "kind create cluster --name demo --config /dev/stdin --wait 180s --kubeconfig "
    assert create.startswith(prefix)
    merged = create.removeprefix(prefix)
    assert merged != str(users) and not Path(merged).exists()


def test_kind_create_reuses_a_cluster_of_the_same_name(tmp_path: Path) -> None:
    environment, log = fake_kind(tmp_path, clusters="demo\\n")
    result = run(CREATE_SCRIPT, {**environment, "KIND_CLUSTER": "demo"})
    assert result.returncode == 0 and "exists: reusing it" in result.stderr
    assert calls(log) == ["kind get clusters", "kind get kubeconfig --name demo"]


def test_gpu_passthrough_stops_with_the_fix_when_docker_is_not_set_up_for_it(tmp_path: Path) -> None:
    environment, log = fake_kind(tmp_path, default_runtime="runc")
    result = run(CREATE_SCRIPT, {**environment, "KIND_CLUSTER": "demo", "GPU_PASSTHROUGH": "1"})
    assert result.returncode == 1
    assert "nvidia-ctk runtime configure --runtime=docker --set-as-default" in result.stderr
    assert not [call for call in calls(log) if call.startswith("kind")]  # nothing created
    # Without GPUs the host's Docker runtime is none of the script's business.
    run(CREATE_SCRIPT, {**environment, "KIND_CLUSTER": "demo"})
    assert "docker info --format {{.DefaultRuntime}}" not in calls(log)[1:]


def test_kind_cluster_component() -> None:
    def program() -> None:
        cluster = Cluster("c", kind_args(gpus=1))
        pulumi.export("kubeconfig", cluster.kubeconfig)

    run_ = evaluate(program)
    create = run_.one("command:local:Command", "c-kind")
    assert create.inputs["create"] == CREATE_SCRIPT and create.inputs["delete"] == DELETE_SCRIPT
    assert create.inputs["environment"] == {"KIND_CLUSTER": "demo", "GPU_PASSTHROUGH": "1"}
    # A rename must replace (delete the old cluster), not just re-run create under the new name.
    assert "demo" in create.inputs["triggers"]
    assert yaml.safe_load(create.inputs["stdin"])["nodes"][0]["extraMounts"]
    assert create.delete_before_replace and create.additional_secret_outputs == ["stdout"]
    assert create.inputs["logging"] == "stderr"  # the kubeconfig stays out of Pulumi's logs
    provider = run_.one("pulumi:providers:kubernetes")
    assert run_.depends_on(provider, create) and contains_secret(provider.inputs["kubeconfig"])
    assert contains_secret(run_.outputs["kubeconfig"])
    assert (
        "GPU_PASSTHROUGH"
        not in evaluate(lambda: Cluster("c", kind_args())).one("command:local:Command").inputs["environment"]
    )


def test_multi_node_kind_shares_a_host_directory_into_every_training_node(tmp_path: Path) -> None:
    args = kind_args(node_count=2, shared=True)
    nodes = yaml.safe_load(render_kind_config(args))["nodes"]
    shared = {"hostPath": str(kind_shared_directory("demo")), "containerPath": SHARED_STORAGE_PATH}
    assert "extraMounts" not in nodes[0]
    assert all(node["extraMounts"] == [shared] for node in nodes[1:])
    run_ = evaluate(lambda: Cluster("c", args))
    create = run_.one("command:local:Command", "c-kind")
    assert "SHARED_DIR" not in create.inputs["environment"]
    storage = run_.one("command:local:Command", "c-kind-shared")
    assert storage.inputs["environment"] == {"SHARED_DIR": str(kind_shared_directory("demo"))}
    assert run_.depends_on(create, storage)
    environment, log = fake_kind(tmp_path)
    shared_dir = tmp_path / "shared"
    environment |= {"KIND_CLUSTER": "demo", "SHARED_DIR": str(shared_dir)}
    assert run(storage.inputs["create"], environment).returncode == 0
    assert shared_dir.is_dir() and shared_dir.stat().st_mode & 0o777 == 0o777
    assert run(CREATE_SCRIPT, environment).returncode == 0
    result = run(DELETE_SCRIPT, environment)
    assert result.returncode == 0, result.stderr
    assert any(call.startswith("kind delete cluster --name demo --kubeconfig /") for call in calls(log))
    assert shared_dir.exists()  # a replaced cluster keeps the checkpoints
    assert run(storage.inputs["delete"], environment).returncode == 0
    assert not shared_dir.exists()


def test_kind_delete_removes_kinds_docker_network_once_no_container_is_on_it(tmp_path: Path) -> None:
    """kind creates the `kind` network for its nodes and never removes it; destroy leaves no network behind,
    but one that other clusters' nodes (or anything else) are still on stays."""
    for containers, removed in (("0", True), ("2", False), ("", False)):  # "": no such network
        environment, log = stub_tools(
            tmp_path,
            {
                "kind": "",
                "docker": f'case "$1 $2" in "network inspect") [ -n "{containers}" ] && echo {containers} ;; esac',
            },
        )
        log.write_text("")
        result = run(DELETE_SCRIPT, {**environment, "KIND_CLUSTER": "demo"})
        assert result.returncode == 0, result.stderr
        deleted, *rest = calls(log)
        assert deleted.startswith("kind delete cluster --name demo --kubeconfig /")
        assert rest == [
            "docker network inspect --format {{len .Containers}} kind",
            *(["docker network rm kind"] if removed else []),
        ], containers
    environment |= {"KIND_EXPERIMENTAL_DOCKER_NETWORK": "lab"}
    run(DELETE_SCRIPT, {**environment, "KIND_CLUSTER": "demo"})
    assert calls(log)[-1] == "docker network inspect --format {{len .Containers}} lab"
