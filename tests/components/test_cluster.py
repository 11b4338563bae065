"""The cluster component: kind config, k3s install scripts, kubeconfig handling and the provider."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pulumi
import pytest
import yaml

from components.cluster import (
    DOCKER_CLUSTER_LABEL,
    DOCKER_DELETE_SCRIPT,
    KIND_DELETE_SCRIPT,
    NVIDIA_DEVICES_MOUNT,
    SHARED_STORAGE_PATH,
    Cluster,
    ClusterArgs,
    DockerNodes,
    RemoteHosts,
    docker_cluster_script,
    k3s_install_script,
    k3s_server_flags,
    k3s_uninstall_script,
    kind_create_script,
    kind_shared_directory,
    nfs_export_script,
    nfs_mount_script,
    render_kind_config,
    rewrite_kubeconfig_server,
)
from tests.stack_helpers import FAKE_KUBECONFIG, contains_secret, evaluate, reveal

IMAGE = "kindest/node:v1.33.1"


def kind_args(node_count: int = 1, gpus: int = 0) -> ClusterArgs:
    return ClusterArgs("kind", "demo", node_count, gpus, IMAGE, "v1.33.6+k3s1")


def bash_syntax_ok(script: str, shell: str = "bash") -> bool:
    return subprocess.run([shell, "-n"], input=script, text=True, check=False).returncode == 0


def test_single_node_kind_cluster_is_one_control_plane() -> None:
    config = yaml.safe_load(render_kind_config(kind_args()))
    assert config["apiVersion"] == "kind.x-k8s.io/v1alpha4"
    assert config["nodes"] == [{"role": "control-plane", "image": IMAGE}]


def test_gpu_kind_cluster_mounts_the_gpus_into_the_training_nodes_only() -> None:
    nodes = yaml.safe_load(render_kind_config(kind_args(node_count=2, gpus=1)))["nodes"]
    assert [node["role"] for node in nodes] == ["control-plane", "worker", "worker"]
    assert "extraMounts" not in nodes[0]
    for worker in nodes[1:]:
        assert worker["extraMounts"] == [{"hostPath": "/dev/null", "containerPath": NVIDIA_DEVICES_MOUNT}]


def test_kind_create_reuses_a_cluster_and_checks_gpu_prerequisites() -> None:
    plain, gpu = kind_create_script(False), kind_create_script(True)
    assert "kind get clusters" in plain and "kind get kubeconfig" in plain
    assert "accept-nvidia-visible-devices-as-volume-mounts" in gpu and "DefaultRuntime" in gpu
    assert "accept-nvidia-visible-devices" not in plain
    assert bash_syntax_ok(plain) and bash_syntax_ok(gpu)


def test_k3s_server_script_pins_the_version_waits_and_prints_the_kubeconfig() -> None:
    script = k3s_install_script("v1.33.6+k3s1", "server", k3s_server_flags("192.0.2.1"))
    assert "INSTALL_K3S_VERSION=v1.33.6+k3s1 sh" in script
    assert "--tls-san=192.0.2.1" in script and "--disable=traefik" in script
    assert "/readyz" in script and script.rstrip().endswith("cat /etc/rancher/k3s/k3s.yaml")
    assert bash_syntax_ok(script, "sh")


def test_k3s_agent_script_joins_with_the_token_from_stdin() -> None:
    script = k3s_install_script("v1.33.6+k3s1", "agent", [], join_url="https://192.0.2.1:6443")
    assert "IFS= read -r K3S_TOKEN" in script and "export K3S_URL=https://192.0.2.1:6443" in script
    assert " agent " in script and "k3s.yaml" not in script
    assert bash_syntax_ok(script, "sh")


def test_uninstall_uses_k3s_own_scripts() -> None:
    assert "/usr/local/bin/k3s-uninstall.sh" in k3s_uninstall_script("server")
    assert "/usr/local/bin/k3s-agent-uninstall.sh" in k3s_uninstall_script("agent")
    assert bash_syntax_ok(k3s_uninstall_script("agent"), "sh")


def test_remote_kubeconfig_points_at_the_server() -> None:
    rewritten = yaml.safe_load(rewrite_kubeconfig_server(FAKE_KUBECONFIG, "https://192.0.2.1:6443"))
    assert rewritten["clusters"][0]["cluster"]["server"] == "https://192.0.2.1:6443"
    assert rewritten["users"] == yaml.safe_load(FAKE_KUBECONFIG)["users"]


def test_kind_cluster_component() -> None:
    def program() -> None:
        cluster = Cluster("c", kind_args(gpus=1))
        pulumi.export("kubeconfig", cluster.kubeconfig)

    run = evaluate(program)
    create = run.one("command:local:Command", "c-kind")
    assert create.inputs["environment"] == {"KIND_CLUSTER": "demo"}
    # A rename must replace (delete the old cluster), not just re-run create under the new name.
    assert "demo" in create.inputs["triggers"]
    assert yaml.safe_load(create.inputs["stdin"])["nodes"][0]["extraMounts"]
    assert create.delete_before_replace and create.additional_secret_outputs == ["stdout"]
    assert create.inputs["logging"] == "stderr"  # the kubeconfig stays out of Pulumi's logs
    provider = run.one("pulumi:providers:kubernetes")
    assert run.depends_on(provider, create) and contains_secret(provider.inputs["kubeconfig"])
    assert contains_secret(run.outputs["kubeconfig"])


def test_remote_k3s_cluster_component(tmp_path: Path) -> None:
    key = tmp_path / "id"
    key.write_text("PRIVATE KEY")
    hosts = RemoteHosts("192.0.2.1", ("192.0.2.2", "192.0.2.3"), "ops", 2222, key)

    def program() -> None:
        cluster = Cluster("c", ClusterArgs("k3s", "demo", 3, 1, IMAGE, "v1.33.6+k3s1", hosts))
        pulumi.export("kubeconfig", cluster.kubeconfig)

    run = evaluate(program)
    server = run.one("command:remote:Command", "c-k3s-server")
    token = run.one("command:remote:Command", "c-k3s-token")
    assert reveal(server.inputs["connection"])["host"] == "192.0.2.1"
    assert reveal(server.inputs["connection"])["port"] == 2222
    # Another host replaces the command, so the old host's k3s is uninstalled rather than left behind.
    assert server.inputs["triggers"] == ["192.0.2.1"] and server.delete_before_replace
    assert contains_secret(server.inputs["connection"])  # the private key
    assert run.depends_on(token, server)
    agents = sorted(
        (r for r in run.of_type("command:remote:Command") if "-agent-" in r.name), key=lambda r: r.name
    )
    assert [reveal(a.inputs["connection"])["host"] for a in agents] == ["192.0.2.2", "192.0.2.3"]
    for agent in agents:
        # One newline-terminated line, as the agent script's `read` expects it.
        assert (
            contains_secret(agent.inputs["stdin"])
            and reveal(agent.inputs["stdin"]) == "K10fake::server:token\n"
        )
        assert "k3s-agent-uninstall.sh" in agent.inputs["delete"]
        assert agent.inputs["triggers"] == [reveal(agent.inputs["connection"])["host"]]
        assert agent.delete_before_replace
        assert run.depends_on(run.one("pulumi:providers:kubernetes"), agent)
    kubeconfig = yaml.safe_load(reveal(run.outputs["kubeconfig"]))
    assert kubeconfig["clusters"][0]["cluster"]["server"] == "https://192.0.2.1:6443"


def stub_tools(tmp_path: Path, scripts: dict[str, str]) -> tuple[dict[str, str], Path]:
    """An environment whose PATH starts with stub programs (name -> sh body) that log their calls."""
    bin_dir, log = tmp_path / "stubs", tmp_path / "calls.log"
    bin_dir.mkdir(exist_ok=True)
    for name, body in scripts.items():
        (bin_dir / name).write_text(f'#!/bin/sh\necho "{name} $*" >> {log}\n{body}\n')
        (bin_dir / name).chmod(0o755)
    return {"PATH": f"{bin_dir}:{os.environ['PATH']}", "HOME": str(tmp_path)}, log


# curl "downloads" an installer that records the environment it ran with.
FAKE_INSTALLER = """out=""
while [ $# -gt 0 ]; do if [ "$1" = -o ]; then out=$2; fi; shift; done
printf '%s\\n' 'echo "installer $* token=$K3S_TOKEN url=$K3S_URL version=$INSTALL_K3S_VERSION" >> "$CALLS"' > "$out"
"""


def test_agent_joins_when_the_token_on_stdin_has_no_trailing_newline(tmp_path: Path) -> None:
    """`IFS= read -r` returns 1 at end of input without a newline; under `set -eu` that used to end the script."""
    environment, log = stub_tools(tmp_path, {"curl": FAKE_INSTALLER, "id": "echo 0"})
    script = k3s_install_script("v1.33.6+k3s1", "agent", [], join_url="https://192.0.2.1:6443")
    for token in ("K10secret::server:abc", "K10secret::server:abc\n"):
        result = subprocess.run(
            ["sh", "-c", script],
            input=token,
            env={**environment, "CALLS": str(log)},
            capture_output=True,
            text=True,
        )
        assert result.returncode == 0, result.stderr
        assert log.read_text().splitlines()[-1] == (
            "installer agent token=K10secret::server:abc url=https://192.0.2.1:6443 version=v1.33.6+k3s1"
        )


@pytest.mark.parametrize(
    "script",
    [
        k3s_install_script("v1.33.6+k3s1", "server", k3s_server_flags(None)),
        k3s_install_script("v1.33.6+k3s1", "agent", [], join_url="https://192.0.2.1:6443"),
        "set -eu\n" + k3s_uninstall_script("server").replace("if [ -x", "if true || [ -x"),
        nfs_export_script(("192.0.2.2",)),
        nfs_mount_script("192.0.2.1"),
    ],
    ids=["server", "agent", "uninstall", "nfs-export", "nfs-mount"],
)
def test_root_scripts_stop_with_one_clear_error_without_passwordless_sudo(
    tmp_path: Path, script: str
) -> None:
    """pulumi-command has no terminal: a sudo that would prompt can only fail, so say so before doing anything."""
    environment, log = stub_tools(
        tmp_path,
        {
            "id": 'case "$1" in -u) echo 1000;; -un) echo ops;; esac',
            "sudo": "exit 1",
            "curl": "exit 0",
            "apt-get": "exit 0",
            "hostname": "echo gpu-1",
        },
    )
    result = subprocess.run(
        ["sh", "-c", script], input="token\n", env=environment, capture_output=True, text=True
    )
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1 and "needs passwordless sudo" in result.stderr
    assert "user ops on gpu-1" in result.stderr and "NOPASSWD" in result.stderr
    calls = log.read_text().splitlines()
    assert [call for call in calls if not call.startswith(("id ", "hostname"))] == ["sudo -n true"]


def test_root_commands_never_prompt_for_a_password() -> None:
    for script in (k3s_uninstall_script("agent"), nfs_export_script(("192.0.2.2",)), nfs_mount_script("h")):
        assert "sudo -n " in script and "sudo " not in script.replace("sudo -n ", "")


def docker_args(node_count: int = 1, shared: bool = False, airgap: Path | None = None) -> ClusterArgs:
    return ClusterArgs(
        "k3s",
        "demo",
        node_count,
        0,
        IMAGE,
        "v1.33.6+k3s1",
        docker=DockerNodes("rancher/k3s:v1.33.6-k3s1", airgap),
        shared_storage=shared,
    )


def test_k3s_in_docker_cluster_component(tmp_path: Path) -> None:
    def program() -> None:
        cluster = Cluster("c", docker_args(node_count=3, shared=True, airgap=tmp_path))
        pulumi.export("kubeconfig", cluster.kubeconfig)

    run = evaluate(program)
    create = run.one("command:local:Command", "c-k3s-docker")
    assert create.inputs["environment"] == {
        "CLUSTER": "demo",
        "NODE_IMAGE": "rancher/k3s:v1.33.6-k3s1",
        "SHARED": "1",
        "AIRGAP_IMAGES": str(tmp_path),
    }
    assert create.inputs["delete"] == DOCKER_DELETE_SCRIPT
    assert create.delete_before_replace and create.additional_secret_outputs == ["stdout"]
    assert create.inputs["logging"] == "stderr"
    provider = run.one("pulumi:providers:kubernetes")
    assert run.depends_on(provider, create) and contains_secret(run.outputs["kubeconfig"])


def test_k3s_in_docker_is_replaced_when_its_nodes_change() -> None:
    def triggers(args: ClusterArgs) -> list[object]:
        run = evaluate(lambda: Cluster("c", args))
        return list(run.one("command:local:Command", "c-k3s-docker").inputs["triggers"])

    base = triggers(docker_args())
    assert triggers(docker_args(node_count=2)) != base
    assert triggers(docker_args(shared=True)) != base
    assert triggers(docker_args()) == base


def fake_docker_for_cluster(tmp_path: Path) -> tuple[dict[str, str], Path]:
    """A docker that logs calls, reports no existing node, all nodes Ready, and a published API port."""
    body = """case "$1" in
  ps) : ;;
  port) echo 127.0.0.1:40123 ;;
  network) if [ "$2" = inspect ]; then exit 1; fi ;;
  exec)
    case "$*" in
      *"get nodes"*) printf 'demo-server Ready\\ndemo-agent-1 Ready\\n' ;;
      *k3s.yaml*) printf 'clusters:\\n- cluster:\\n    server: https://127.0.0.1:6443\\n' ;;
    esac ;;
esac"""
    return stub_tools(tmp_path, {"docker": body})


def test_k3s_in_docker_script_creates_labelled_nodes_and_prints_a_reachable_kubeconfig(
    tmp_path: Path,
) -> None:
    environment, log = fake_docker_for_cluster(tmp_path)
    environment |= {"CLUSTER": "demo", "NODE_IMAGE": "k3s:test", "SHARED": "1", "AIRGAP_IMAGES": "/images"}
    script = docker_cluster_script(2, k3s_server_flags("127.0.0.1"))
    result = subprocess.run(["bash", "-c", script], env=environment, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert yaml.safe_load(result.stdout)["clusters"][0]["cluster"]["server"] == "https://127.0.0.1:40123"
    calls = log.read_text().splitlines()
    label = f"{DOCKER_CLUSTER_LABEL}=demo"
    assert f"docker network create --label {label} demo" in calls
    runs = [call for call in calls if call.startswith("docker run -d")]
    assert len(runs) == 2
    server, agent = runs
    for call, name in ((server, "demo-server"), (agent, "demo-agent-1")):
        assert f"--name {name} --hostname {name} --label {label} --network demo --privileged" in call
        assert f"-v {name}-data:/var/lib/rancher/k3s" in call
        assert "-v /images:/var/lib/rancher/k3s/agent/images:ro" in call
        assert f"-v demo-shared:{SHARED_STORAGE_PATH}" in call
    assert (
        "-p 127.0.0.1::6443 k3s:test server --write-kubeconfig-mode=644 --disable=traefik,servicelb,metrics-server"
        in server
    )
    assert "-e K3S_URL=https://demo-server:6443 k3s:test agent" in agent
    token = server.split("K3S_TOKEN=", 1)[1].split()[0]
    assert len(token) == 48 and f"K3S_TOKEN={token}" in agent  # one random token, shared
    assert f"docker volume create --label {label} demo-shared" in calls


def test_k3s_in_docker_script_reuses_a_running_cluster(tmp_path: Path) -> None:
    environment, log = fake_docker_for_cluster(tmp_path)
    bin_docker = Path(environment["PATH"].split(":", 1)[0]) / "docker"
    bin_docker.write_text(bin_docker.read_text().replace("ps) : ;;", "ps) echo id1; echo id2 ;;"))
    environment |= {"CLUSTER": "demo", "NODE_IMAGE": "k3s:test"}
    result = subprocess.run(
        ["bash", "-c", docker_cluster_script(2, [])], env=environment, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    assert "exists: reusing it" in result.stderr
    assert not [call for call in log.read_text().splitlines() if call.startswith(("docker run", "docker rm"))]


def test_k3s_in_docker_delete_removes_every_labelled_object(tmp_path: Path) -> None:
    environment, log = stub_tools(
        tmp_path, {"docker": 'case "$1 $2" in "ps -aq"|"volume ls"|"network ls") echo x1;; esac'}
    )
    result = subprocess.run(
        ["bash", "-c", DOCKER_DELETE_SCRIPT],
        env={**environment, "CLUSTER": "demo"},
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    calls = log.read_text().splitlines()
    label = f"label={DOCKER_CLUSTER_LABEL}=demo"
    assert calls == [
        f"docker ps -aq --filter {label}",
        "docker rm -f -v x1",
        f"docker volume ls -q --filter {label}",
        "docker volume rm x1",
        f"docker network ls -q --filter {label}",
        "docker network rm x1",
    ]


def test_multi_node_kind_shares_a_host_directory_into_every_training_node(tmp_path: Path) -> None:
    args = ClusterArgs("kind", "demo", 2, 0, IMAGE, "v1.33.6+k3s1", shared_storage=True)
    nodes = yaml.safe_load(render_kind_config(args))["nodes"]
    shared = {"hostPath": str(kind_shared_directory("demo")), "containerPath": SHARED_STORAGE_PATH}
    assert "extraMounts" not in nodes[0]
    assert all(node["extraMounts"] == [shared] for node in nodes[1:])
    run = evaluate(lambda: Cluster("c", args))
    create = run.one("command:local:Command", "c-kind")
    assert create.inputs["environment"]["SHARED_DIR"] == str(kind_shared_directory("demo"))
    assert create.inputs["delete"] == KIND_DELETE_SCRIPT
    environment, _ = stub_tools(tmp_path, {"kind": "exit 0"})
    shared_dir = tmp_path / "shared"
    subprocess.run(
        ["bash", "-c", kind_create_script(False)],
        env={**environment, "KIND_CLUSTER": "demo", "SHARED_DIR": str(shared_dir)},
        input="",
        check=True,
        capture_output=True,
    )
    assert shared_dir.is_dir() and shared_dir.stat().st_mode & 0o777 == 0o777
    subprocess.run(
        ["bash", "-c", KIND_DELETE_SCRIPT],
        env={**environment, "KIND_CLUSTER": "demo", "SHARED_DIR": str(shared_dir)},
        check=True,
    )
    assert not shared_dir.exists()


def test_remote_multi_node_storage_is_an_nfs_export_of_the_server_mounted_on_every_agent(
    tmp_path: Path,
) -> None:
    key = tmp_path / "id"
    key.write_text("PRIVATE KEY")
    hosts = RemoteHosts("192.0.2.1", ("192.0.2.2", "192.0.2.3"), "ops", 22, key)
    args = ClusterArgs("k3s", "demo", 3, 1, IMAGE, "v1.33.6+k3s1", hosts, shared_storage=True)
    run = evaluate(lambda: Cluster("c", args))
    export = run.one("command:remote:Command", "c-nfs-export")
    assert reveal(export.inputs["connection"])["host"] == "192.0.2.1"
    assert (
        f"{SHARED_STORAGE_PATH} 192.0.2.2(rw,sync,no_subtree_check) 192.0.2.3(rw,sync,no_subtree_check)"
        in (export.inputs["create"])
    )
    assert "rm -rf " + SHARED_STORAGE_PATH in export.inputs["delete"]  # destroy leaves nothing on the server
    mounts = sorted(
        (r for r in run.of_type("command:remote:Command") if "nfs-mount" in r.name), key=lambda r: r.name
    )
    assert [reveal(m.inputs["connection"])["host"] for m in mounts] == ["192.0.2.2", "192.0.2.3"]
    for mount in mounts:
        assert f"192.0.2.1:{SHARED_STORAGE_PATH} {SHARED_STORAGE_PATH} nfs" in mount.inputs["create"]
        assert "umount" in mount.inputs["delete"]
        assert run.depends_on(mount, export)
        assert run.depends_on(run.one("pulumi:providers:kubernetes"), mount)
    for script in (export.inputs["create"], export.inputs["delete"], mounts[0].inputs["create"]):
        assert bash_syntax_ok(script, "sh")
    single = ClusterArgs("k3s", "demo", 3, 1, IMAGE, "v1.33.6+k3s1", hosts)
    assert not [r for r in evaluate(lambda: Cluster("c", single)).resources if "nfs" in r.name]
