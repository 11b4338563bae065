"""scripts/check_prereqs.py against fake tools on a PATH of the test's own."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.support.docker_base_image import REPO_ROOT

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


def fake_docker(bin_dir: Path, run_exit: int, run_message: str = "") -> Path:
    """A docker whose `info` answers and whose `run` exits run_exit; it logs each call's subcommand and flags."""
    log = bin_dir / "docker.log"
    script = bin_dir / "docker"
    script.write_text(
        f'#!/bin/sh\necho "$*" >> {log}\n'
        'case "$1" in\n'
        "  import) cat > /dev/null ;;\n"
        f"  run) echo '{run_message}' >&2; echo \"Run 'docker run --help' for more information\" >&2; exit {run_exit} ;;\n"
        "esac\nexit 0\n"
    )
    script.chmod(0o755)
    return log


# What Docker 20.10 answers here, where the engine lacks CAP_SYS_RESOURCE (2026-12-05).
CAPS_REFUSED = (
    "docker: Error response from daemon: failed to create shim task: OCI runtime create failed: runc create "
    "failed: unable to start container process: unable to apply caps: operation not permitted: unknown"
)


def test_kind_and_k3s_in_docker_ask_whether_docker_starts_privileged_containers(tmp_path: Path) -> None:
    """Where the engine refuses --privileged, the docker block says so and what to do instead of 'ok docker'."""
    log = fake_docker(tmp_path, 125, CAPS_REFUSED)
    for stack in ("dev", "docker"):
        result = check(tmp_path, "--stack", stack, "docker")
        assert result.returncode == 1, (stack, result.stdout)
        assert "ok       docker" not in result.stdout
        assert (
            "MISSING  docker: this Docker cannot start a privileged container: `docker run --privileged` failed: "
            f"{CAPS_REFUSED}\n         needed because kind's nodes (and k3s-in-Docker's) are containers Docker "
            "starts with --privileged\n         get it: run Docker on a host or VM"
        ) in result.stdout, stack
        assert "make up STACK=existing" in result.stdout
    calls = log.read_text().splitlines()
    runs = [call for call in calls if call.startswith("run ")]
    assert len(runs) == 2 and all("--privileged" in run and "--rm" in run for run in runs), calls
    # The probe image is imported (nothing pulled) and removed again each time.
    imported = [call.split()[-1] for call in calls if call.startswith("import ")]
    removed = [call.split()[-1] for call in calls if call.startswith("image rm ")]
    assert len(imported) == 2 and imported == removed, calls
    assert all(run.split()[-2] == tag for run, tag in zip(runs, imported, strict=True))


def test_a_docker_that_starts_privileged_containers_is_ok(tmp_path: Path) -> None:
    """Exit 127 (the probe's absent command not found) means the privileged settings were applied."""
    fake_docker(tmp_path, 127, 'exec: "/absent": stat /absent: no such file or directory: unknown')
    fake_tool(tmp_path, "kind")
    result = check(tmp_path, "--stack", "dev", "docker")
    assert result.returncode == 0, result.stdout
    assert result.stdout.split() == ["ok", "docker", "ok", "kind"]


def test_other_cluster_kinds_do_not_probe_privileged_containers(tmp_path: Path) -> None:
    log = fake_docker(tmp_path, 125, CAPS_REFUSED)
    for stack in ("existing", "gpu", "cluster"):  # existing; k3s local; k3s remote
        result = check(tmp_path, "--stack", stack, "docker")
        assert result.stdout.split() == ["ok", "docker"], (stack, result.stdout)
    assert [call.split()[0] for call in log.read_text().splitlines()] == ["info"] * 3


def test_a_stack_adds_only_what_its_cluster_kind_needs(tmp_path: Path) -> None:
    """kind only for clusterKind kind (dev, and any stack that leaves it at its default)."""
    for name in ("pulumi", "kubectl"):
        fake_tool(tmp_path, name)
    fake_docker(tmp_path, 127)
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
