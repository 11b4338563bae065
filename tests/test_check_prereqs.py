"""scripts/check_prereqs.py against fake tools on a PATH of the test's own."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.docker_base_image import REPO_ROOT

SCRIPT = REPO_ROOT / "scripts" / "check_prereqs.py"


def fake_tool(bin_dir: Path, name: str, exit_code: int = 0, message: str = "") -> None:
    path = bin_dir / name
    path.write_text(f"#!/bin/sh\necho '{message}' >&2\nexit {exit_code}\n")
    path.chmod(0o755)


def check(bin_dir: Path, *tools: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(SCRIPT), *tools],
        capture_output=True,
        text=True,
        env={"PATH": str(bin_dir)},
        timeout=60,
    )


def test_passes_when_every_tool_answers(tmp_path: Path) -> None:
    for name in ("pulumi", "docker", "kind"):
        fake_tool(tmp_path, name)
    result = check(tmp_path, "pulumi", "docker", "kind")
    assert result.returncode == 0, result.stdout
    assert result.stdout.split() == ["ok", "pulumi", "ok", "docker", "ok", "kind"]


def test_names_each_missing_tool_with_how_to_get_it(tmp_path: Path) -> None:
    fake_tool(tmp_path, "pulumi")
    result = check(tmp_path, "pulumi", "docker", "kind")
    assert result.returncode == 1
    assert "ok       pulumi" in result.stdout
    assert "MISSING  docker: `docker` is not on PATH" in result.stdout
    assert "MISSING  kind: `kind` is not on PATH" in result.stdout
    assert "https://docs.docker.com/engine/install/" in result.stdout
    assert "go install sigs.k8s.io/kind@" in result.stdout
    assert "2 prerequisite(s) missing: nothing was changed" in result.stdout


def test_a_docker_client_without_an_engine_is_missing(tmp_path: Path) -> None:
    fake_tool(tmp_path, "docker", exit_code=1, message="Cannot connect to the Docker daemon")
    result = check(tmp_path, "docker")
    assert result.returncode == 1
    assert "failed: Cannot connect to the Docker daemon" in result.stdout
    assert "make sure `docker info` works" in result.stdout


def test_rejects_a_tool_it_does_not_know(tmp_path: Path) -> None:
    result = check(tmp_path, "helm")
    assert result.returncode == 2
    assert "invalid choice: 'helm'" in result.stderr


def test_a_stack_adds_only_what_its_cluster_kind_needs(tmp_path: Path) -> None:
    """kind only for clusterKind kind (dev, and any stack that leaves it at its default)."""
    for name in ("pulumi", "docker", "kubectl"):
        fake_tool(tmp_path, name)
    for stack, needs_kind in (("dev", True), ("existing", False), ("gpu", False), ("docker", False)):
        result = check(tmp_path, "--stack", stack, "pulumi", "docker", "kubectl")
        assert (result.returncode == 1) is needs_kind, (stack, result.stdout)
        assert ("MISSING  kind:" in result.stdout) is needs_kind, stack
    result = check(tmp_path, "--stack", "no-such-stack", "pulumi")
    assert result.returncode == 1
    assert result.stdout.splitlines() == [
        "error: no stack file Pulumi.no-such-stack.yaml: STACK must be one of cluster, dev, docker, existing, gpu"
        " (or add Pulumi.no-such-stack.yaml; Pulumi.yaml lists every setting)"
    ]  # not kind, Pulumi.yaml's default, silently: `make up` would create a new stack of that name


def test_python_is_this_interpreter_and_is_checked_first(tmp_path: Path) -> None:
    result = check(tmp_path, "python", "pulumi")
    assert result.stdout.startswith("ok       python 3.")
