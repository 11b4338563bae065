"""k3s over SSH: the commands on each host, their scripts (as the remote shell gets them) and NFS storage."""

from __future__ import annotations

from pathlib import Path

import pulumi
import pytest
import yaml

from components.cluster import Cluster
from components.cluster.k3s_remote import install_script, nfs_scripts, uninstall_script
from components.cluster.provider import SHARED_STORAGE_PATH, ClusterArgs, RemoteHosts
from tests.components.cluster.stubs import FAKE_INSTALLER, POSIX_SH, ROOT_ID, USER_ID, calls, run, stub_tools
from tests.support.stack_helpers import contains_secret, evaluate, reveal

VERSION = "v1.33.6+k3s1"


def hosts(tmp_path: Path, port: int = 22) -> RemoteHosts:
    key = tmp_path / "id"
    key.write_text("PRIVATE KEY")
    return RemoteHosts("192.0.2.1", ("192.0.2.2", "192.0.2.3"), "ops", port, key)


def remote_args(hosts: RemoteHosts, shared: bool = False) -> ClusterArgs:
    return ClusterArgs("k3s", "demo", 3, 1, "kindest/node", VERSION, hosts, shared_storage=shared)


def test_remote_k3s_cluster_component(tmp_path: Path) -> None:
    def program() -> None:
        cluster = Cluster("c", remote_args(hosts(tmp_path, port=2222)))
        pulumi.export("kubeconfig", cluster.kubeconfig)

    run_ = evaluate(program)
    server = run_.one("command:remote:Command", "c-k3s-server")
    token = run_.one("command:remote:Command", "c-k3s-token")
    assert reveal(server.inputs["connection"])["host"] == "192.0.2.1"
    assert reveal(server.inputs["connection"])["port"] == 2222
    assert server.inputs["create"] == install_script(
        VERSION,
        "server",
        ["--write-kubeconfig-mode=600", "--disable=traefik,servicelb,metrics-server", "--tls-san=192.0.2.1"],
    )
    assert server.inputs["delete"] == uninstall_script("server")
    # SSH would refuse an `environment` (sshd's AcceptEnv): the inputs are exported by the script text.
    assert "environment" not in server.inputs
    # Another host replaces the command, so the old host's k3s is uninstalled rather than left behind.
    assert server.inputs["triggers"] == ["192.0.2.1"] and server.delete_before_replace
    assert contains_secret(server.inputs["connection"])  # the private key
    assert reveal(server.inputs["connection"])["privateKey"] == "PRIVATE KEY"
    assert reveal(server.inputs["connection"])["user"] == "ops"
    # The server's and the token command's stdout (kubeconfig, node token) are secrets, never logged.
    for command in (server, token):
        assert command.inputs["logging"] == "stderr" and "stdout" in command.additional_secret_outputs
    assert run_.depends_on(token, server)
    assert reveal(token.inputs["connection"])["host"] == "192.0.2.1"  # the node token is on the server
    # A server installed anew has a new token: its id is the token command's trigger, so it is read again.
    (trigger,) = token.inputs["triggers"]
    assert trigger.startswith("c-k3s-server-id-")  # the mock engine's id of the server command
    agents = sorted(
        (r for r in run_.of_type("command:remote:Command") if "-agent-" in r.name), key=lambda r: r.name
    )
    assert [reveal(a.inputs["connection"])["host"] for a in agents] == ["192.0.2.2", "192.0.2.3"]
    for agent in agents:
        # One newline-terminated line, as the agent script's `read` expects it.
        assert contains_secret(agent.inputs["stdin"])
        assert reveal(agent.inputs["stdin"]) == "K10fake::server:token\n"
        assert agent.inputs["create"] == install_script(
            VERSION, "agent", [], join_url="https://192.0.2.1:6443"
        )
        assert agent.inputs["delete"] == uninstall_script("agent")
        assert agent.inputs["triggers"] == [reveal(agent.inputs["connection"])["host"]]
        assert agent.delete_before_replace
        assert run_.depends_on(run_.one("pulumi:providers:kubernetes"), agent)
    kubeconfig = yaml.safe_load(reveal(run_.outputs["kubeconfig"]))
    assert kubeconfig["clusters"][0]["cluster"]["server"] == "https://192.0.2.1:6443"


def test_exported_inputs_survive_any_value_and_reach_the_script(tmp_path: Path) -> None:
    """The export lines quote each value: a host name with shell syntax in it stays one literal value."""
    environment, log = stub_tools(tmp_path, {"curl": FAKE_INSTALLER, "id": ROOT_ID})
    odd = "https://h'x $(touch pwned):6443"
    result = run(
        install_script(VERSION, "agent", [], join_url=odd), environment, interpreter=POSIX_SH, stdin="t\n"
    )
    assert result.returncode == 0, result.stderr
    assert calls(log)[-1] == f"installer agent token=t url={odd} version={VERSION}"
    assert not (tmp_path / "pwned").exists()


def root_stubs(tmp_path: Path, identity: str = ROOT_ID) -> tuple[dict[str, str], Path]:
    """A host where every command that would change it only logs; tee appends its input to the log."""
    passive = {
        name: "exit 0" for name in ("apt-get", "sed", "install", "exportfs", "mount", "umount", "rm", "curl")
    }
    return stub_tools(
        tmp_path,
        {
            **passive,
            "id": identity,
            "env": 'shift; "$@"',  # env DEBIAN_FRONTEND=... apt-get ...: run the (stub) program
            "tee": 'cat >> "$CALLS"',
            "mountpoint": "exit 1",
            "hostname": "echo gpu-1",
            "sudo": "exit 1",
        },
    )


def test_nfs_scripts_export_the_shared_directory_to_the_agents_and_mount_it_there(tmp_path: Path) -> None:
    scripts = nfs_scripts(hosts(tmp_path))
    environment, log = root_stubs(tmp_path)
    assert run(scripts["export"], environment, interpreter=POSIX_SH).returncode == 0
    assert calls(log) == [
        "id -u",
        "id -u",
        "env DEBIAN_FRONTEND=noninteractive apt-get install -y -q nfs-kernel-server",
        "apt-get install -y -q nfs-kernel-server",
        "id -u",
        f"sed -i \\#^{SHARED_STORAGE_PATH} #d /etc/exports",  # re-runs leave one line
        "id -u",
        "tee -a /etc/exports",
        f"{SHARED_STORAGE_PATH} 192.0.2.2(rw,sync,no_subtree_check) 192.0.2.3(rw,sync,no_subtree_check)",
        "id -u",
        "exportfs -ra",
    ]
    log.write_text("")
    assert run(scripts["mount"], environment, interpreter=POSIX_SH).returncode == 0
    mount_calls = [call for call in calls(log) if call != "id -u"]
    assert mount_calls[-5:] == [
        f"sed -i \\#[[:space:]]{SHARED_STORAGE_PATH}[[:space:]]#d /etc/fstab",
        "tee -a /etc/fstab",
        f"192.0.2.1:{SHARED_STORAGE_PATH} {SHARED_STORAGE_PATH} nfs defaults,_netdev 0 0",
        f"mountpoint -q {SHARED_STORAGE_PATH}",
        f"mount {SHARED_STORAGE_PATH}",
    ]
    log.write_text("")
    assert run(scripts["unexport"], environment, interpreter=POSIX_SH).returncode == 0
    assert f"rm -rf {SHARED_STORAGE_PATH}" not in calls(log)  # the checkpoints stay (a moved server)
    log.write_text("")
    assert run(scripts["shared"], environment, interpreter=POSIX_SH).returncode == 0
    assert f"install -d -m 0777 {SHARED_STORAGE_PATH}" in calls(log)
    log.write_text("")
    assert run(scripts["remove"], environment, interpreter=POSIX_SH).returncode == 0
    assert f"rm -rf {SHARED_STORAGE_PATH}" in calls(log)  # destroy leaves nothing on the server
    log.write_text("")
    assert run(scripts["unmount"], environment, interpreter=POSIX_SH).returncode == 0
    assert f"sed -i \\#[[:space:]]{SHARED_STORAGE_PATH}[[:space:]]#d /etc/fstab" in calls(log)


def test_remote_multi_node_storage_is_an_nfs_export_of_the_server_mounted_on_every_agent(
    tmp_path: Path,
) -> None:
    remote = hosts(tmp_path)
    run_ = evaluate(lambda: Cluster("c", remote_args(remote, shared=True)))
    scripts = nfs_scripts(remote)
    export = run_.one("command:remote:Command", "c-nfs-export")
    assert reveal(export.inputs["connection"])["host"] == "192.0.2.1"
    assert (export.inputs["create"], export.inputs["delete"]) == (scripts["export"], scripts["unexport"])
    mounts = sorted(
        (r for r in run_.of_type("command:remote:Command") if "nfs-mount" in r.name), key=lambda r: r.name
    )
    assert [reveal(m.inputs["connection"])["host"] for m in mounts] == ["192.0.2.2", "192.0.2.3"]
    # The export goes after k3s is on the server (and before it is uninstalled); each mount after the export
    # and its agent's k3s, and is removed before either.
    assert run_.depends_on(export, run_.one("command:remote:Command", "c-k3s-server"))
    # Another set of agents is another export line: exported anew, the old line unexported first (which
    # keeps the directory: a command of its own). The triggers are what deployed stacks hold.
    assert (
        export.inputs["triggers"] == ["192.0.2.1", "192.0.2.2", "192.0.2.3"] and export.delete_before_replace
    )
    directory = run_.one("command:remote:Command", "c-nfs-shared")
    assert (directory.inputs["create"], directory.inputs["delete"]) == (scripts["shared"], scripts["remove"])
    assert "triggers" not in directory.inputs or not directory.inputs["triggers"]
    assert run_.depends_on(export, directory)
    # The shared directory too goes after k3s is on the server (and is removed before it is uninstalled).
    assert run_.depends_on(directory, run_.one("command:remote:Command", "c-k3s-server"))
    for index, mount in enumerate(mounts):
        assert (mount.inputs["create"], mount.inputs["delete"]) == (scripts["mount"], scripts["unmount"])
        assert run_.depends_on(mount, export)
        assert run_.depends_on(mount, run_.one("command:remote:Command", f"c-k3s-agent-{index}"))
        assert run_.depends_on(run_.one("pulumi:providers:kubernetes"), mount)
        # Another server or agent host is another mount: unmounted (its fstab line removed) first.
        assert (
            mount.inputs["triggers"] == ["192.0.2.1", f"192.0.2.{index + 2}"] and mount.delete_before_replace
        )
    assert not [r for r in evaluate(lambda: Cluster("c", remote_args(remote))).resources if "nfs" in r.name]


ROOT_SCRIPTS = {
    "server": lambda h: install_script(VERSION, "server", []),
    "agent": lambda h: install_script(VERSION, "agent", [], join_url="https://192.0.2.1:6443"),
    "uninstall": lambda h: uninstall_script("server"),
    "nfs-export": lambda h: nfs_scripts(h)["export"],
    "nfs-unexport": lambda h: nfs_scripts(h)["unexport"],
    "nfs-mount": lambda h: nfs_scripts(h)["mount"],
    "nfs-unmount": lambda h: nfs_scripts(h)["unmount"],
}


@pytest.mark.parametrize("name", ROOT_SCRIPTS)
def test_root_scripts_stop_with_one_clear_error_without_passwordless_sudo(tmp_path: Path, name: str) -> None:
    """pulumi-command has no terminal: a sudo that would prompt can only fail, so say so before doing anything."""
    environment, log = root_stubs(tmp_path, identity=USER_ID)
    # The uninstaller exists (else there is nothing to do and no sudo needed).
    bin_dir = tmp_path / "k3s-bin"
    bin_dir.mkdir()
    (bin_dir / "k3s-uninstall.sh").write_text("#!/bin/sh\n")
    (bin_dir / "k3s-uninstall.sh").chmod(0o755)
    environment["INSTALL_K3S_BIN_DIR"] = str(bin_dir)
    result = run(ROOT_SCRIPTS[name](hosts(tmp_path)), environment, interpreter=POSIX_SH, stdin="token\n")
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1 and "needs passwordless sudo" in result.stderr
    assert "user ops on gpu-1" in result.stderr and "NOPASSWD" in result.stderr
    assert [call for call in calls(log) if not call.startswith(("id ", "hostname"))] == ["sudo -n true"]


def test_the_token_command_reads_the_node_token_as_root(tmp_path: Path) -> None:
    token = evaluate(lambda: Cluster("c", remote_args(hosts(tmp_path)))).one(
        "command:remote:Command", "c-k3s-token"
    )
    environment, log = stub_tools(tmp_path, {"id": USER_ID, "sudo": 'shift; echo "K10token"'})
    result = run(token.inputs["create"], environment, interpreter=POSIX_SH)
    assert result.returncode == 0 and result.stdout == "K10token\n"
    assert calls(log)[-1] == "sudo -n cat /var/lib/rancher/k3s/server/node-token"


def test_the_cluster_s_identity_names_every_k3s_host_also_with_shared_storage(tmp_path: Path) -> None:
    """A server or agent installed anew (a new id) is a new cluster, without the old one's images: with or
    without the NFS storage, each k3s command's id is part of the identity."""
    for shared in (False, True):

        def program(shared: bool = shared) -> None:
            pulumi.export("identity", Cluster("c", remote_args(hosts(tmp_path), shared=shared)).identity)

        identity = evaluate(program).outputs["identity"].split(",")
        for name in ("c-k3s-server", "c-k3s-agent-0", "c-k3s-agent-1"):
            assert [part for part in identity if part.startswith(f"{name}-id-")], (shared, name, identity)
