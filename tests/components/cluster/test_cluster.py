"""The cluster package: one module per kind behind one interface, and the shape of its scripts."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from components.cluster import ClusterArgs, DockerNodes, ExistingCluster, RemoteHosts, provider_for
from components.cluster.existing import Existing
from components.cluster.k3s_docker import K3sDocker
from components.cluster.k3s_local import K3sLocal
from components.cluster.k3s_remote import K3sRemote
from components.cluster.kind import Kind
from components.cluster.provider import ClusterProvider
from components.cluster.scripts import PACKAGE
from components.shell import COMPONENTS_DIR
from tests.components.cluster.stubs import package_scripts

MODULE = "components.cluster"
PACKAGE_DIR = COMPONENTS_DIR / PACKAGE
KIND_MODULES = {"kind", "k3s_local", "k3s_remote", "k3s_docker", "existing"}


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


def test_each_cluster_kind_is_its_own_provider() -> None:
    remote = RemoteHosts("192.0.2.1", (), "ops", 22, Path("/nonexistent"))
    assert type(provider_for(args(kind="kind"))) is Kind
    assert type(provider_for(args())) is K3sLocal
    assert type(provider_for(args(remote=remote))) is K3sRemote
    assert type(provider_for(args(docker=DockerNodes("rancher/k3s")))) is K3sDocker
    existing = ExistingCluster("apiVersion: v1", "default", "kubeconfig")
    assert type(provider_for(args(kind="existing", existing=existing))) is Existing


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
