"""The k3s kinds' shared installer and uninstaller (run under stubs), and k3s on this machine."""

from __future__ import annotations

from pathlib import Path

import pulumi
import pytest
import yaml

from components.cluster import Cluster
from components.cluster.k3s import (
    INSTALL_SCRIPT,
    UNINSTALL_SCRIPT,
    install_environment,
    k3s_server_flags,
    rewrite_kubeconfig_server,
)
from components.cluster.provider import ClusterArgs
from tests.components.cluster.stubs import (
    FAKE_INSTALLER,
    POSIX_SH,
    ROOT_ID,
    USER_ID,
    calls,
    run,
    stub_tools,
)
from tests.support.stack_helpers import FAKE_KUBECONFIG, contains_secret, evaluate

VERSION = "v1.33.6+k3s1"


def fake_host(tmp_path: Path) -> tuple[dict[str, str], Path]:
    """A root shell whose curl fetches FAKE_INSTALLER, whose k3s API is ready and whose k3s.yaml is known."""
    return stub_tools(
        tmp_path,
        {
            "curl": FAKE_INSTALLER,
            "id": ROOT_ID,
            "k3s": "exit 0",
            "cat": 'if [ "$1" = /etc/rancher/k3s/k3s.yaml ]; then echo "kubeconfig"; else exec /bin/cat "$@"; fi',
        },
    )


def test_server_install_pins_the_version_waits_for_the_api_and_prints_the_kubeconfig(tmp_path: Path) -> None:
    environment, log = fake_host(tmp_path)
    server = install_environment(VERSION, "server", k3s_server_flags("192.0.2.1"))
    result = run(INSTALL_SCRIPT, {**environment, **server}, interpreter=POSIX_SH)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "kubeconfig\n"
    assert (
        "installer server --write-kubeconfig-mode=600 --disable=traefik,servicelb,metrics-server"
        f" --tls-san=192.0.2.1 token= url= version={VERSION}"
    ) in calls(log)
    assert "k3s kubectl get --raw=/readyz" in calls(log)


def test_the_server_kubeconfig_is_root_only_and_read_through_sudo(tmp_path: Path) -> None:
    """Issue 23, the whole kind: the k3s kubeconfig holds cluster-admin credentials, so k3s writes it 0600
    (--write-kubeconfig-mode) and a non-root installer reads it (and asks the API) through sudo."""
    environment, log = stub_tools(
        tmp_path,
        {
            "curl": FAKE_INSTALLER,
            "id": USER_ID,
            "sudo": 'if [ "$1" = -n ]; then shift; fi; if [ "$1" = true ]; then exit 0; fi; exec "$@"',
            "k3s": "exit 0",
            "cat": 'if [ "$1" = /etc/rancher/k3s/k3s.yaml ]; then echo "kubeconfig"; else exec /bin/cat "$@"; fi',
        },
    )
    server = install_environment(VERSION, "server", k3s_server_flags(None))
    result = run(INSTALL_SCRIPT, {**environment, **server}, interpreter=POSIX_SH)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "kubeconfig\n"
    assert "--write-kubeconfig-mode=600" in server["K3S_FLAGS"].split()
    assert "sudo -n cat /etc/rancher/k3s/k3s.yaml" in calls(log)
    assert "sudo -n k3s kubectl get --raw=/readyz" in calls(log)


def test_agent_joins_with_the_token_from_stdin_with_or_without_a_trailing_newline(tmp_path: Path) -> None:
    """`IFS= read -r` returns 1 at end of input without a newline; under `set -eu` that used to end the script."""
    environment, log = fake_host(tmp_path)
    agent = install_environment(VERSION, "agent", [], join_url="https://192.0.2.1:6443")
    for token in ("K10secret::server:abc", "K10secret::server:abc\n"):
        result = run(INSTALL_SCRIPT, {**environment, **agent}, interpreter=POSIX_SH, stdin=token)
        assert result.returncode == 0, result.stderr
        assert result.stdout == ""  # an agent has no kubeconfig to print
        assert calls(log)[-1] == (
            f"installer agent token=K10secret::server:abc url=https://192.0.2.1:6443 version={VERSION}"
        )


@pytest.mark.parametrize(
    ("role", "uninstaller"), [("server", "k3s-uninstall.sh"), ("agent", "k3s-agent-uninstall.sh")]
)
def test_uninstall_runs_k3s_own_uninstaller_of_the_role(tmp_path: Path, role: str, uninstaller: str) -> None:
    environment, log = stub_tools(tmp_path, {"id": ROOT_ID})
    bin_dir = tmp_path / "k3s-bin"
    bin_dir.mkdir()
    for name in ("k3s-uninstall.sh", "k3s-agent-uninstall.sh"):
        (bin_dir / name).write_text(f'#!/bin/sh\necho "{name}" >> "$CALLS"\n')
        (bin_dir / name).chmod(0o755)
    environment |= {"K3S_ROLE": role, "INSTALL_K3S_BIN_DIR": str(bin_dir)}
    assert run(UNINSTALL_SCRIPT, environment, interpreter=POSIX_SH).returncode == 0
    assert calls(log)[-1] == uninstaller
    # Already gone: nothing to do, and no error.
    (bin_dir / uninstaller).unlink()
    before = calls(log)
    assert run(UNINSTALL_SCRIPT, environment, interpreter=POSIX_SH).returncode == 0
    assert calls(log) == before


def test_remote_kubeconfig_points_at_the_server() -> None:
    rewritten = yaml.safe_load(rewrite_kubeconfig_server(FAKE_KUBECONFIG, "https://192.0.2.1:6443"))
    assert rewritten["clusters"][0]["cluster"]["server"] == "https://192.0.2.1:6443"
    assert rewritten["users"] == yaml.safe_load(FAKE_KUBECONFIG)["users"]


def test_only_the_server_changes_in_the_remote_kubeconfig() -> None:
    """The rest stays as written, in its order (here not sorted: the server line before the CA's)."""
    written = (
        "kind: Config\n"
        "apiVersion: v1\n"
        "clusters:\n"
        "- name: default\n"
        "  cluster:\n"
        "    server: https://127.0.0.1:6443\n"
        "    certificate-authority-data: Y2E=\n"
        "users:\n"
        "- name: default\n"
        "  user:\n"
        "    token: fake-token\n"
    )
    assert rewrite_kubeconfig_server(written, "https://192.0.2.1:6443") == written.replace(
        "https://127.0.0.1:6443", "https://192.0.2.1:6443"
    )


def test_local_k3s_cluster_component() -> None:
    def program() -> None:
        cluster = Cluster("c", ClusterArgs("k3s", "demo", 1, 1, "kindest/node", VERSION))
        pulumi.export("kubeconfig", cluster.kubeconfig)

    run_ = evaluate(program)
    server = run_.one("command:local:Command", "c-k3s-server")
    assert server.inputs["create"] == INSTALL_SCRIPT and server.inputs["delete"] == UNINSTALL_SCRIPT
    # delete runs with the same environment: K3S_ROLE=server picks the server's uninstaller.
    assert server.inputs["environment"] == {
        "K3S_ROLE": "server",
        "INSTALL_K3S_VERSION": VERSION,
        "K3S_FLAGS": "--write-kubeconfig-mode=600 --disable=traefik,servicelb,metrics-server",
    }
    assert "interpreter" not in server.inputs  # /bin/sh, as on a remote host
    assert server.inputs["logging"] == "stderr" and server.additional_secret_outputs == ["stdout"]
    assert run_.depends_on(run_.one("pulumi:providers:kubernetes"), server)
    assert contains_secret(run_.outputs["kubeconfig"])


def test_the_installer_sees_only_the_stacks_own_k3s_variables(tmp_path: Path) -> None:
    """pulumi-command runs a local command with the user's whole environment (v1.2.1,
    provider/pkg/provider/local/commandOutputs.go: os.Environ() then the command's own), and get.k3s.io reads
    every K3S_* and INSTALL_K3S_* variable: a K3S_URL and K3S_TOKEN left in the user's shell would join the
    new server to another cluster, INSTALL_K3S_EXEC would replace its command."""
    stray = {
        "K3S_URL": "https://other:6443",
        "K3S_TOKEN": "other-token",
        "INSTALL_K3S_EXEC": "agent",
        "INSTALL_K3S_SKIP_START": "true",
    }
    recorder = (
        'out=""; while [ $# -gt 0 ]; do if [ "$1" = -o ]; then out=$2; fi; shift; done\n'
        'printf \'%s\\n\' \'env | grep -E "^(INSTALL_)?K3S_" | sort >> "$CALLS"\' > "$out"\n'
    )
    environment, log = stub_tools(
        tmp_path, {"curl": recorder, "id": ROOT_ID, "k3s": "exit 0", "cat": "exit 0"}
    )
    server = install_environment(VERSION, "server", ["--disable=traefik"])
    result = run(INSTALL_SCRIPT, {**environment, **stray, **server}, interpreter=POSIX_SH)
    assert result.returncode == 0, result.stderr
    seen = [line for line in calls(log) if line.startswith(("K3S_", "INSTALL_K3S_"))]
    assert seen == [f"INSTALL_K3S_VERSION={VERSION}", "K3S_FLAGS=--disable=traefik", "K3S_ROLE=server"]
