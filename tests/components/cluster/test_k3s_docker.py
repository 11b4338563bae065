"""k3s in Docker: the component, and k3s_docker_create.sh / k3s_docker_delete.sh under a stub docker."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pulumi
import yaml

from components.cluster import Cluster
from components.cluster.k3s_docker import CREATE_SCRIPT, DELETE_SCRIPT, DOCKER_CLUSTER_LABEL
from components.cluster.provider import SHARED_STORAGE_PATH, ClusterArgs, DockerNodes
from tests.components.cluster.stubs import calls, run, stub_tools
from tests.support.stack_helpers import contains_secret, evaluate

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
        "K3S_FLAGS": "--write-kubeconfig-mode=600 --disable=traefik,servicelb,metrics-server --tls-san=127.0.0.1",
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
    # A stack already deployed keeps its nodes: the same args give these triggers, as the state holds them
    # (no air-gap archives: an empty path); another value would replace the cluster on the next `pulumi up`.
    assert base == ["demo", 1, "rancher/k3s:v1.33.6-k3s1", "", False, "v1.33.6+k3s1"]
    assert triggers(docker_args(node_count=2)) != base
    assert triggers(docker_args(shared=True)) != base
    assert triggers(replace(docker_args(), name="other")) != base
    assert triggers(replace(docker_args(), k3s_version="v1.34.1+k3s1")) != base
    assert triggers(replace(docker_args(), docker=DockerNodes("mirror.example/k3s:v1.33.6-k3s1"))) != base
    # The air-gap images are imported by the nodes when they start: other archives, other nodes.
    with_images = triggers(docker_args(airgap=Path("/images")))
    assert with_images != base and triggers(docker_args(airgap=Path("/other"))) != with_images
    assert triggers(docker_args()) == base


def script_environment(node_count: int = 2, **more: str) -> dict[str, str]:
    """The create script's inputs, as the component passes them."""
    create = evaluate(lambda: Cluster("c", docker_args(node_count=node_count))).one("command:local:Command")
    return {**create.inputs["environment"], "NODE_IMAGE": "k3s:test", **more}


def fake_docker_for_cluster(
    tmp_path: Path, existing: tuple[str, ...] = (), ready: int = 2, subnet: str = "172.30.0.0/16"
) -> tuple[dict[str, str], Path]:
    """A docker that logs calls and plays the engine: `existing` node containers (and their data volumes),
    `ready` Ready nodes, a network subnet for the probe, and the host port the server's run published."""
    published = tmp_path / "published-port"
    names = "".join(f"echo {name}; " for name in existing)
    volumes = "".join(f"echo {name}-data; " for name in existing) + "echo demo-shared; "
    body = f"""case "$1 $2" in
  "ps -a") {names}: ;;
  "ps -aq") {"echo id1 id2" if existing else ":"} ;;
  "volume ls") {volumes}: ;;
  "network ls") {"echo net1" if existing else ":"} ;;
  "network inspect") echo {subnet} ;;
  "port "*) echo "127.0.0.1:$(cat {published})" ;;
  "run -d")
    while [ $# -gt 0 ]; do
      if [ "$1" = -p ]; then echo "$2" | cut -d: -f2 > {published}; fi
      shift
    done ;;
  "exec "*)
    case "$*" in
      *"get nodes"*) i=0; while [ "$i" -lt {ready} ]; do echo "node-$i Ready"; i=$((i + 1)); done ;;
      *k3s.yaml*) printf 'clusters:\\n- cluster:\\n    server: https://127.0.0.1:6443\\n' ;;
    esac ;;
esac"""
    return stub_tools(tmp_path, {"docker": body})


def server_of(kubeconfig: str) -> str:
    return str(yaml.safe_load(kubeconfig)["clusters"][0]["cluster"]["server"])


def test_k3s_in_docker_script_creates_labelled_nodes_and_prints_a_reachable_kubeconfig(
    tmp_path: Path,
) -> None:
    environment, log = fake_docker_for_cluster(tmp_path)
    environment |= script_environment(SHARED="1", AIRGAP_IMAGES="/images")
    result = run(CREATE_SCRIPT, environment)
    assert result.returncode == 0, result.stderr
    log_lines = calls(log)
    # The cluster network gets the subnet Docker offered a probe network, as its own.
    assert log_lines.index(f"docker network create --label {LABEL} demo-subnet-probe") < log_lines.index(
        "docker network rm demo-subnet-probe"
    )
    assert f"docker network create --label {LABEL} --subnet 172.30.0.0/16 demo" in log_lines
    runs = [call for call in log_lines if call.startswith("docker run -d")]
    assert len(runs) == 2
    server, agent = runs
    for call, name, address in ((server, "demo-server", "172.30.0.2"), (agent, "demo-agent-1", "172.30.0.3")):
        assert (
            f"--name {name} --hostname {name} --label {LABEL} --network demo --ip {address} --privileged"
            in call
        )
        assert f"-v {name}-data:/var/lib/rancher/k3s" in call
        assert "-v /images:/var/lib/rancher/k3s/agent/images:ro" in call
        assert f"-v demo-shared:{SHARED_STORAGE_PATH}" in call
    # The API's host port is chosen here and pinned (127.0.0.1:<port>:6443): Docker binds it again on
    # every start, so the kubeconfig the state keeps still reaches the API after a restart.
    port = int(server.split("-p 127.0.0.1:", 1)[1].split(":6443 ", 1)[0])
    assert 0 < port < 65536
    assert (
        f"-p 127.0.0.1:{port}:6443 k3s:test server --write-kubeconfig-mode=600"
        " --disable=traefik,servicelb,metrics-server --tls-san=127.0.0.1"
    ) in server
    assert server_of(result.stdout) == f"https://127.0.0.1:{port}"
    assert "-e K3S_URL=https://demo-server:6443 k3s:test agent" in agent
    token = server.split("K3S_TOKEN=", 1)[1].split()[0]
    assert len(token) == 48 and f"K3S_TOKEN={token}" in agent  # one random token, shared
    # The shared volume is not the nodes' command's: k3s_docker_shared_create.sh makes it.
    assert not [
        call for call in log_lines if call.startswith("docker volume create") and "demo-shared" in call
    ]


def test_k3s_in_docker_made_again_on_an_update_takes_the_port_its_kubeconfig_names(tmp_path: Path) -> None:
    """pulumi-command runs create again on an update with the last stdout in PULUMI_COMMAND_STDOUT."""
    environment, log = fake_docker_for_cluster(tmp_path)
    previous = "apiVersion: v1\nclusters:\n- cluster:\n    server: https://127.0.0.1:41234\n  name: default\n"
    result = run(CREATE_SCRIPT, {**environment, **script_environment(), "PULUMI_COMMAND_STDOUT": previous})
    assert result.returncode == 0, result.stderr
    server = next(call for call in calls(log) if call.startswith("docker run -d --name demo-server"))
    assert "-p 127.0.0.1:41234:6443 " in server
    assert server_of(result.stdout) == "https://127.0.0.1:41234"


def test_k3s_in_docker_script_makes_one_agent_less_than_nodes(tmp_path: Path) -> None:
    environment, log = fake_docker_for_cluster(tmp_path, ready=3)
    result = run(CREATE_SCRIPT, {**environment, **script_environment(node_count=3)})
    assert result.returncode == 0, result.stderr
    runs = [call for call in calls(log) if call.startswith("docker run -d")]
    assert [call.split("--name ")[1].split()[0] for call in runs] == [
        "demo-server",
        "demo-agent-1",
        "demo-agent-2",
    ]
    assert [call.split("--ip ")[1].split()[0] for call in runs] == ["172.30.0.2", "172.30.0.3", "172.30.0.4"]


def test_k3s_in_docker_script_starts_the_nodes_of_an_existing_cluster_again(tmp_path: Path) -> None:
    """Stopped or running, every node exists: it is started as it was (port, address, token, data)."""
    environment, log = fake_docker_for_cluster(tmp_path, existing=("demo-agent-1", "demo-server"))
    (tmp_path / "published-port").write_text("40123\n")
    result = run(CREATE_SCRIPT, {**environment, **script_environment()})
    assert result.returncode == 0, result.stderr
    assert "exists: reusing it" in result.stderr
    assert "docker start demo-server demo-agent-1" in calls(log)
    assert not [
        call for call in calls(log) if call.startswith(("docker run", "docker rm", "docker volume rm"))
    ]
    assert server_of(result.stdout) == "https://127.0.0.1:40123"


def test_k3s_in_docker_script_starts_afresh_without_the_old_data_when_nodes_are_missing(
    tmp_path: Path,
) -> None:
    """A new token cannot open the old datastore: the nodes' data volumes go too; the checkpoints stay."""
    environment, log = fake_docker_for_cluster(tmp_path, existing=("demo-server",))
    result = run(CREATE_SCRIPT, {**environment, **script_environment()})
    assert result.returncode == 0, result.stderr
    log_lines = calls(log)
    assert "docker rm -f -v id1 id2" in log_lines
    assert "docker volume rm demo-server-data" in log_lines  # not demo-shared
    assert "docker network rm net1" in log_lines
    assert log_lines.index("docker network rm net1") < log_lines.index(
        f"docker network create --label {LABEL} --subnet 172.30.0.0/16 demo"
    )


def test_k3s_in_docker_script_refuses_a_subnet_without_room_for_static_addresses(tmp_path: Path) -> None:
    environment, log = fake_docker_for_cluster(tmp_path, subnet="fd00::/64")
    result = run(CREATE_SCRIPT, {**environment, **script_environment()})
    assert result.returncode == 1
    assert result.stderr == (
        "k3s-in-Docker cluster demo: Docker offers the subnet 'fd00::/64'; an IPv4 /24 or larger is needed\n"
    )
    assert not [call for call in calls(log) if call.startswith("docker run")]


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
