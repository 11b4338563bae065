"""The kind fixture's docker wrapper (tests/e2e/kind/docker), offline: what reaches the real docker."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import yaml

from tests.e2e.harness import REPO_ROOT
from tests.e2e.kind_run import fixture_config

KIND_FIXTURE = REPO_ROOT / "tests" / "e2e" / "kind"


def run_wrapper(tmp_path: Path, *args: str) -> list[str]:
    """The argv the real docker (a stub after the wrapper on PATH) received."""
    real = tmp_path / "real"
    real.mkdir(exist_ok=True)
    log = tmp_path / "argv.json"
    (real / "docker").write_text(
        f'#!/usr/bin/env python3\nimport json, sys\nopen("{log}", "w").write(json.dumps(sys.argv[1:]))\n'
    )
    (real / "docker").chmod(0o755)
    subprocess.run(
        [str(KIND_FIXTURE / "docker"), *args],
        env={"PATH": f"{KIND_FIXTURE}:{real}:/usr/bin:/bin"},
        check=True,
        timeout=30,
    )
    argv: list[str] = json.loads(log.read_text())
    return argv


def test_a_privileged_run_gets_the_near_privileged_flags_and_the_node_shim(tmp_path: Path) -> None:
    # How kind v0.29.0 starts a node (pkg/cluster/internal/providers/docker/provision.go), abridged.
    kind_run = [
        "run", "--name", "demo-control-plane", "--hostname", "demo-control-plane",
        "--label", "io.x-k8s.kind.role=control-plane", "--privileged",
        "--security-opt", "seccomp=unconfined", "--security-opt", "apparmor=unconfined",
        "--tmpfs", "/tmp", "--tmpfs", "/run", "--volume", "/var", "--volume", "/lib/modules:/lib/modules:ro",
        "--detach", "--tty", "--net", "kind", "--cgroupns=private", "kindest/node:v1.33.13",
    ]  # fmt: skip
    argv = run_wrapper(tmp_path, *kind_run)
    at = kind_run.index("--privileged")
    replacement = argv[at : at + len(argv) - len(kind_run) + 1]
    assert argv[:at] == kind_run[:at] and argv[at + len(replacement) :] == kind_run[at + 1 :]
    assert replacement == [
        "--cap-add=ALL",
        "--cap-drop=SYS_RESOURCE",
        "--security-opt=systempaths=unconfined",
        "--device-cgroup-rule=a *:* rwm",
        "--device=/dev/kmsg",
        f"--volume={KIND_FIXTURE}/node-shim.sh:/kind-fixture/node-shim.sh:ro",
        "--entrypoint=/kind-fixture/node-shim.sh",
    ]


def test_everything_else_passes_through_unchanged(tmp_path: Path) -> None:
    for call in (
        ["ps", "-a", "--filter", "label=io.x-k8s.kind.cluster=demo", "--format", "{{.Names}}"],
        ["exec", "demo-control-plane", "sh", "-c", "echo 'two words'"],
        ["run", "--rm", "--entrypoint=sleep", "kindest/base", "infinity"],
        ["network", "create", "-d=bridge", "kind"],
    ):
        assert run_wrapper(tmp_path, *call) == call


def test_a_privileged_exec_runs_with_the_nodes_own_capabilities(tmp_path: Path) -> None:
    """kind runs every command in a node with `docker exec --privileged`, which is refused likewise."""
    call = ["exec", "--privileged", "-i", "demo-control-plane", "cat", "/kind/version"]
    assert run_wrapper(tmp_path, *call) == ["exec", "-i", "demo-control-plane", "cat", "/kind/version"]


def test_the_shim_ends_in_kinds_own_entrypoint() -> None:
    shim = (KIND_FIXTURE / "node-shim.sh").read_text()
    assert shim.rstrip().endswith('exec /usr/local/bin/entrypoint /sbin/init "$@"')
    # It never binds the host's cgroup tree: only the node's own mounts are remounted.
    assert "remount,bind,rw" in shim and "-v /sys/fs/cgroup" not in shim


def test_the_kind_run_keeps_the_dev_stacks_own_config_and_adds_only_the_fixtures() -> None:
    dev = yaml.safe_load((REPO_ROOT / "Pulumi.dev.yaml").read_text())["config"]
    config = fixture_config(REPO_ROOT, {"kindNodeImage": "trainstack-e2e/kind-node:v1.33.13-kind-v0.29.0"})
    assert config == {**dev, "trainstack:kindNodeImage": "trainstack-e2e/kind-node:v1.33.13-kind-v0.29.0"}
    assert config["trainstack:clusterKind"] == "kind"
