"""k3s in Docker: the component, and k3s_docker_create.sh / k3s_docker_delete.sh under a stub docker."""

from __future__ import annotations

from pathlib import Path

import pulumi
import yaml

from components.cluster import DOCKER_CLUSTER_LABEL, Cluster, ClusterArgs, DockerNodes
from components.cluster.k3s_docker import CREATE_SCRIPT, DELETE_SCRIPT
from components.cluster.provider import SHARED_STORAGE_PATH
from tests.components.cluster.stubs import calls, run, stub_tools
from tests.stack_helpers import contains_secret, evaluate

LABEL = f"{DOCKER_CLUSTER_LABEL}=demo"


def docker_args(node_count: int = 1, shared: bool = False, airgap: Path | None = None) -> ClusterArgs:
    return ClusterArgs(
        "k3s",
        "demo",
        node_count,
        0,
        "kindest/node",
        "v1.33.6+k3s1",
        docker=DockerNodes("rancher/k3s:v1.33.6-k3s1", airgap),
        shared_storage=shared,
    )


def test_k3s_in_docker_cluster_component(tmp_path: Path) -> None:
    def program() -> None:
        cluster = Cluster("c", docker_args(node_count=3, shared=True, airgap=tmp_path))
        pulumi.export("kubeconfig", cluster.kubeconfig)

    run_ = evaluate(program)
    create = run_.one("command:local:Command", "c-k3s-docker")
    assert create.inputs["environment"] == {
        "CLUSTER": "demo",
        "LABEL": LABEL,
        "NODE_IMAGE": "rancher/k3s:v1.33.6-k3s1",
        "NODE_COUNT": "3",
        "K3S_FLAGS": "--write-kubeconfig-mode=644 --disable=traefik,servicelb,metrics-server --tls-san=127.0.0.1",
        "SHARED": "1",
        "SHARED_STORAGE_PATH": SHARED_STORAGE_PATH,
        "AIRGAP_IMAGES": str(tmp_path),
    }
    assert create.inputs["create"] == CREATE_SCRIPT and create.inputs["delete"] == DELETE_SCRIPT
    assert create.delete_before_replace and create.additional_secret_outputs == ["stdout"]
    assert create.inputs["logging"] == "stderr"
    provider = run_.one("pulumi:providers:kubernetes")
    assert run_.depends_on(provider, create) and contains_secret(run_.outputs["kubeconfig"])


def test_k3s_in_docker_is_replaced_when_its_nodes_change() -> None:
    def triggers(args: ClusterArgs) -> list[object]:
        run_ = evaluate(lambda: Cluster("c", args))
        return list(run_.one("command:local:Command", "c-k3s-docker").inputs["triggers"])

    base = triggers(docker_args())
    assert triggers(docker_args(node_count=2)) != base
    assert triggers(docker_args(shared=True)) != base
    assert triggers(docker_args()) == base


def script_environment(node_count: int = 2, **more: str) -> dict[str, str]:
    """The create script's inputs, as the component passes them."""
    create = evaluate(lambda: Cluster("c", docker_args(node_count=node_count))).one("command:local:Command")
    return {**create.inputs["environment"], "NODE_IMAGE": "k3s:test", **more}


def fake_docker_for_cluster(tmp_path: Path, running: int = 0, ready: int = 2) -> tuple[dict[str, str], Path]:
    """A docker that logs calls, reports `running` running and `ready` Ready nodes, and a published API port."""
    body = f"""case "$1" in
  ps) i=0; while [ "$i" -lt {running} ]; do echo "id$i"; i=$((i + 1)); done ;;
  port) echo 127.0.0.1:40123 ;;
  network) if [ "$2" = inspect ]; then exit 1; fi ;;
  exec)
    case "$*" in
      *"get nodes"*) i=0; while [ "$i" -lt {ready} ]; do echo "node-$i Ready"; i=$((i + 1)); done ;;
      *k3s.yaml*) printf 'clusters:\\n- cluster:\\n    server: https://127.0.0.1:6443\\n' ;;
    esac ;;
esac"""
    return stub_tools(tmp_path, {"docker": body})


def test_k3s_in_docker_script_creates_labelled_nodes_and_prints_a_reachable_kubeconfig(
    tmp_path: Path,
) -> None:
    environment, log = fake_docker_for_cluster(tmp_path)
    environment |= script_environment(SHARED="1", AIRGAP_IMAGES="/images")
    result = run(CREATE_SCRIPT, environment)
    assert result.returncode == 0, result.stderr
    assert yaml.safe_load(result.stdout)["clusters"][0]["cluster"]["server"] == "https://127.0.0.1:40123"
    log_lines = calls(log)
    assert f"docker network create --label {LABEL} demo" in log_lines
    runs = [call for call in log_lines if call.startswith("docker run -d")]
    assert len(runs) == 2
    server, agent = runs
    for call, name in ((server, "demo-server"), (agent, "demo-agent-1")):
        assert f"--name {name} --hostname {name} --label {LABEL} --network demo --privileged" in call
        assert f"-v {name}-data:/var/lib/rancher/k3s" in call
        assert "-v /images:/var/lib/rancher/k3s/agent/images:ro" in call
        assert f"-v demo-shared:{SHARED_STORAGE_PATH}" in call
    assert (
        "-p 127.0.0.1::6443 k3s:test server --write-kubeconfig-mode=644 --disable=traefik,servicelb,metrics-server"
        " --tls-san=127.0.0.1"
    ) in server
    assert "-e K3S_URL=https://demo-server:6443 k3s:test agent" in agent
    token = server.split("K3S_TOKEN=", 1)[1].split()[0]
    assert len(token) == 48 and f"K3S_TOKEN={token}" in agent  # one random token, shared
    assert f"docker volume create --label {LABEL} demo-shared" in log_lines


def test_k3s_in_docker_script_makes_one_agent_less_than_nodes(tmp_path: Path) -> None:
    environment, log = fake_docker_for_cluster(tmp_path, ready=3)
    result = run(CREATE_SCRIPT, {**environment, **script_environment(node_count=3)})
    assert result.returncode == 0, result.stderr
    names = [call.split("--name ")[1].split()[0] for call in calls(log) if call.startswith("docker run -d")]
    assert names == ["demo-server", "demo-agent-1", "demo-agent-2"]


def test_k3s_in_docker_script_reuses_a_running_cluster(tmp_path: Path) -> None:
    environment, log = fake_docker_for_cluster(tmp_path, running=2)
    result = run(CREATE_SCRIPT, {**environment, **script_environment()})
    assert result.returncode == 0, result.stderr
    assert "exists: reusing it" in result.stderr
    assert not [call for call in calls(log) if call.startswith(("docker run", "docker rm"))]


def test_k3s_in_docker_delete_removes_every_labelled_object(tmp_path: Path) -> None:
    environment, log = stub_tools(
        tmp_path, {"docker": 'case "$1 $2" in "ps -aq"|"volume ls"|"network ls") echo x1; echo x2;; esac'}
    )
    result = run(DELETE_SCRIPT, {**environment, **script_environment()})
    assert result.returncode == 0, result.stderr
    label = f"label={LABEL}"
    assert calls(log) == [
        f"docker ps -aq --filter {label}",
        "docker rm -f -v x1 x2",
        f"docker volume ls -q --filter {label}",
        "docker volume rm x1 x2",
        f"docker network ls -q --filter {label}",
        "docker network rm x1 x2",
    ]
