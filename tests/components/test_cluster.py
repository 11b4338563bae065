"""The cluster component: kind config, k3s install scripts, kubeconfig handling and the provider."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pulumi
import yaml

from components.cluster import (
    NVIDIA_DEVICES_MOUNT,
    Cluster,
    ClusterArgs,
    RemoteHosts,
    k3s_install_script,
    k3s_server_flags,
    k3s_uninstall_script,
    kind_create_script,
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
        assert (
            contains_secret(agent.inputs["stdin"])
            and reveal(agent.inputs["stdin"]) == "K10fake::server:token"
        )
        assert "k3s-agent-uninstall.sh" in agent.inputs["delete"]
        assert agent.inputs["triggers"] == [reveal(agent.inputs["connection"])["host"]]
        assert agent.delete_before_replace
        assert run.depends_on(run.one("pulumi:providers:kubernetes"), agent)
    kubeconfig = yaml.safe_load(reveal(run.outputs["kubeconfig"]))
    assert kubeconfig["clusters"][0]["cluster"]["server"] == "https://192.0.2.1:6443"
