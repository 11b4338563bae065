"""The cluster package: one module per kind behind one interface, and the shape of its scripts."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pulumi
import pytest
import yaml

from components.cluster import Cluster, provider_for
from components.cluster.existing import Existing
from components.cluster.k3s_docker import K3sDocker
from components.cluster.k3s_local import K3sLocal
from components.cluster.k3s_remote import K3sRemote
from components.cluster.kind import Kind
from components.cluster.provider import (
    ClusterArgs,
    ClusterProvider,
    DockerNodes,
    ExistingCluster,
    RemoteHosts,
)
from components.cluster.scripts import PACKAGE
from components.shell import COMPONENTS_DIR
from tests.components.cluster.stubs import package_scripts
from tests.support.stack_helpers import FAKE_KUBECONFIG, evaluate, is_secret, reveal

MODULE = "components.cluster"
PACKAGE_DIR = COMPONENTS_DIR / PACKAGE
KIND_MODULES = {"kind", "k3s_local", "k3s_remote", "k3s_docker", "existing"}
CLUSTER_TYPE = "trainstack:index:Cluster"


def args(**changes: object) -> ClusterArgs:
    base: dict[str, object] = {
        "kind": "k3s",
        "name": "demo",
        "node_count": 1,
        "gpus_per_node": 0,
        "kind_node_image": "kindest/node",
        "k3s_version": "v1.33.6+k3s1",
    }
    return ClusterArgs(**{**base, **changes})  # type: ignore[arg-type]


def test_each_cluster_kind_is_its_own_provider_made_for_the_cluster_s_args() -> None:
    remote = RemoteHosts("192.0.2.1", (), "ops", 22, Path("/nonexistent"))
    existing = ExistingCluster("apiVersion: v1", "default", "kubeconfig")
    expected = [
        (args(kind="kind"), Kind),
        (args(), K3sLocal),
        (args(remote=remote), K3sRemote),
        (args(docker=DockerNodes("rancher/k3s")), K3sDocker),
        (args(kind="existing", existing=existing), Existing),
    ]
    for cluster_args, kind in expected:
        provider = provider_for(cluster_args)
        assert type(provider) is kind
        # ClusterProvider's contract: every kind carries the args it was chosen for (its provision reads them).
        assert provider.args is cluster_args, kind.__name__


@pytest.mark.parametrize("provider", [Kind, K3sLocal, K3sRemote, K3sDocker, Existing])
def test_every_kind_implements_the_interface_and_states_its_shared_storage(provider: type) -> None:
    assert issubclass(provider, ClusterProvider)
    assert provider.__doc__ and "Teardown:" in provider.__doc__ and "Node identity:" in provider.__doc__
    # One node only (k3s here), or nodes the stack did not make, offer no shared storage; the other kinds
    # say what backs it.
    assert (provider.shared_storage is None) == (provider in (K3sLocal, Existing))


def imported_modules(path: Path) -> set[str]:
    """The package's modules a module imports (`components.cluster` itself counts as `__init__`)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith(MODULE):
            found.add(node.module[len(MODULE) + 1 :] or "__init__")
    return found


def test_no_kind_imports_another_and_the_package_has_no_import_cycle() -> None:
    modules = {path.stem: imported_modules(path) for path in PACKAGE_DIR.glob("*.py")}
    assert set(modules) >= KIND_MODULES
    for kind in KIND_MODULES:
        assert not (modules[kind] & (KIND_MODULES - {kind})), kind
    # Only __init__ (Cluster) composes the kinds; nothing imports __init__ back.
    for module, imports in modules.items():
        if module != "__init__":
            assert "__init__" not in imports, module
            assert module in KIND_MODULES or not (imports & KIND_MODULES), module


def test_every_script_of_the_package_is_run_by_a_module() -> None:
    sources = "".join(path.read_text() for path in PACKAGE_DIR.glob("*.py"))
    for script in package_scripts():
        assert f'"{script.name}"' in sources, script.name


def test_scripts_run_by_a_remote_login_shell_are_posix_sh() -> None:
    """The k3s scripts run in a remote login shell (and k3s_local's /bin/sh): no bash."""
    for script in package_scripts():
        first = script.read_text().splitlines()[0]
        if script.name.startswith(("k3s_install", "k3s_uninstall", "k3s_remote")):
            assert first == "#!/bin/sh", script.name
        else:
            assert first == "#!/usr/bin/env bash", script.name


# sudo where a command starts: at the line's start or after ; & | ! ( then else do.
_SUDO_COMMAND = re.compile(r"(?:^|[;&|!(]|\bthen|\belse|\bdo)\s*sudo\b(?P<rest>.*)")
# Quoted text (messages that tell the user what to run) is not a command.
_QUOTED = re.compile(r"\"[^\"]*\"|'[^']*'")


def test_root_commands_never_prompt_for_a_password() -> None:
    """Every sudo the scripts run is `sudo -n`, which fails instead of prompting (there is no terminal)."""
    runs = 0
    for script in [COMPONENTS_DIR / "root.sh", *package_scripts()]:
        for line in script.read_text().splitlines():
            code = _QUOTED.sub("''", line.split(" #")[0]).strip()
            for match in _SUDO_COMMAND.finditer(code):
                runs += 1
                assert match["rest"].startswith(" -n "), f"{script.name}: {line}"
    assert runs >= 2  # as_root and require_root in root.sh


def every_kind(tmp_path: Path) -> dict[str, ClusterArgs]:
    """One ClusterArgs per kind, multi-node where the kind can be (so every resource it may declare is)."""
    key = tmp_path / "id"
    key.write_text("PRIVATE KEY")
    remote = RemoteHosts("192.0.2.1", ("192.0.2.2", "192.0.2.3"), "ops", 22, key)
    existing = ExistingCluster(FAKE_KUBECONFIG, "default", "kubeconfig")
    return {
        "kind": args(kind="kind", node_count=2, shared_storage=True),
        "k3s": args(),
        "k3s-remote": args(node_count=3, remote=remote, shared_storage=True),
        "k3s-docker": args(node_count=2, docker=DockerNodes("rancher/k3s"), shared_storage=True),
        "existing": args(kind="existing", existing=existing),
    }


# Every resource each kind declares, by name: their names (and so their URNs) are those of the stacks already
# deployed; another name or parent is another resource to Pulumi, which would delete the cluster it has.
RESOURCES = {
    "kind": ["c-kind", "c-kind-shared"],
    "k3s": ["c-k3s-server"],
    "k3s-remote": [
        "c-k3s-server",
        "c-k3s-token",
        "c-k3s-agent-0",
        "c-k3s-agent-1",
        "c-nfs-shared",
        "c-nfs-export",
        "c-nfs-mount-0",
        "c-nfs-mount-1",
    ],
    "k3s-docker": ["c-k3s-docker", "c-k3s-docker-shared"],
    "existing": [],
}


@pytest.mark.parametrize("kind", RESOURCES)
def test_every_resource_of_a_kind_is_a_child_of_the_cluster_under_its_own_name(
    tmp_path: Path, kind: str
) -> None:
    run = evaluate(lambda: Cluster("c", every_kind(tmp_path)[kind]))
    cluster = run.one(CLUSTER_TYPE)
    children = [resource for resource in run.resources if resource is not cluster]
    assert sorted(r.name for r in children) == sorted([*RESOURCES[kind], "c-provider"])
    for child in children:
        assert child.parent == cluster.urn, child.name
        assert child.urn.endswith(f"::{CLUSTER_TYPE}${child.type}::{child.name}"), child.urn


def test_the_cluster_takes_the_options_it_is_given() -> None:
    def program() -> None:
        outer = pulumi.ComponentResource("test:index:Outer", "outer")
        Cluster("c", args(kind="kind"), pulumi.ResourceOptions(parent=outer))

    run = evaluate(program)
    assert run.one(CLUSTER_TYPE).parent == run.one("test:index:Outer").urn


@pytest.mark.parametrize("kind", RESOURCES)
def test_the_cluster_s_kubeconfig_is_the_kind_s_a_secret_wherever_it_is_recorded(
    tmp_path: Path, kind: str
) -> None:
    """Every kind's kubeconfig reaches the provider and the component's outputs, always as a secret."""

    def program() -> None:
        cluster = Cluster("c", every_kind(tmp_path)[kind])
        pulumi.export("kubeconfig", cluster.kubeconfig)

    run = evaluate(program)
    provider = run.one("pulumi:providers:kubernetes")
    recorded = run.component_outputs[run.one(CLUSTER_TYPE).urn]
    assert recorded["clusterName"] == "demo"
    for kubeconfig in (provider.inputs["kubeconfig"], recorded["kubeconfig"], run.outputs["kubeconfig"]):
        assert is_secret(kubeconfig)
        if kind == "k3s-remote":  # pointed at the server's address (test_k3s: only the server changes)
            assert yaml.safe_load(reveal(kubeconfig)) == yaml.safe_load(
                FAKE_KUBECONFIG.replace("https://127.0.0.1:6443", "https://192.0.2.1:6443")
            )
        else:  # what the kind's command printed (the mock's FAKE_KUBECONFIG), or the user's, unchanged
            assert reveal(kubeconfig) == FAKE_KUBECONFIG


@pytest.mark.parametrize("kind", RESOURCES)
def test_each_local_command_runs_under_the_shell_its_scripts_are_written_for(
    tmp_path: Path, kind: str
) -> None:
    """A script's first line names its shell (bash: arrays, pipefail); the command runs it under that shell
    (pulumi-command's default interpreter is /bin/sh, which is not bash everywhere)."""
    run = evaluate(lambda: Cluster("c", every_kind(tmp_path)[kind]))
    for command in run.of_type("command:local:Command"):
        interpreter = command.inputs.get("interpreter") or ["/bin/sh", "-c"]
        for script in (command.inputs["create"], command.inputs.get("delete")):
            if script:
                first = script.splitlines()[0]  # `#!/usr/bin/env bash`, or `# shellcheck shell=sh` for sh
                shell = (
                    first.split("shell=")[1] if "shell=" in first else first.removeprefix("#!").split()[-1]
                )
                assert Path(interpreter[0]).name == Path(shell).name, (command.name, script.splitlines()[0])
