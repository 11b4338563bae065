"""Helpers for the trainer tests: tiny CPU runs of `python -m trainer` in subprocesses, offline."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

from tests.support.s3_server import S3Server, start_server, stop_server

REPO = Path(__file__).resolve().parents[2]
TINY_CONFIG = REPO / "trainer" / "configs" / "tiny.yaml"


def trainer_env(**extra: str) -> dict[str, str]:
    """The environment of a trainer subprocess: CPU DeepSpeed, one thread per process (2-core machine)."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("PET_", "RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_"))
    }
    env.update(
        DS_ACCELERATOR="cpu", OMP_NUM_THREADS="1", PYTHONPATH=str(REPO), CUDA_VISIBLE_DEVICES="", **extra
    )
    return env


def run_overrides(run_dir: Path, **settings: Any) -> list[str]:
    """--set arguments putting a run's checkpoints, output and token cache under run_dir."""
    values = {
        "checkpoint.dir": run_dir / "checkpoints",
        "output.dir": run_dir / "output",
        "data.cache_dir": run_dir / "cache",
        "data.path": REPO / "trainer" / "data",
        "train.eval_every": 0,
        "output.log_every": 5,
        **{key.replace("__", "."): value for key, value in settings.items()},
    }
    return [arg for key, value in values.items() for arg in ("--set", f"{key}={value}")]


def trainer_command(command: str, config: Path, overrides: list[str]) -> list[str]:
    return [sys.executable, "-m", "trainer", command, "--config", str(config), *overrides]


def run(args: list[str], timeout: float = 240, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        args, cwd=REPO, env=trainer_env(**env), capture_output=True, text=True, timeout=timeout
    )


def torchrun_command(nproc: int, config: Path, overrides: list[str]) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}",
            "-m", "trainer", "train", "--config", str(config), *overrides]  # fmt: skip


def stop_when(process: subprocess.Popen[str], ready: Path, timeout: float = 180) -> tuple[int, str, str]:
    """SIGTERM the process once `ready` exists (a checkpoint mid-run); its exit code and output."""
    wait_for(ready, process, timeout)
    process.send_signal(signal.SIGTERM)
    out, err = process.communicate(timeout=timeout)
    return process.returncode, out, err


def metrics(run_dir: Path) -> list[dict[str, Any]]:
    lines = (run_dir / "output" / "metrics.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines]


def published(run_dir: Path) -> list[str]:
    """The published checkpoints' names, oldest first (not the step_N.tmp-<run> staging directories)."""
    return sorted(p.name for p in (run_dir / "checkpoints").glob("step_*") if p.name[5:].isdigit())


def checkpoint_state(checkpoint: Path) -> dict[str, dict[str, torch.Tensor]]:
    """Every parameter's saved state (fp32 weight, exp_avg, exp_avg_sq) by name, from all shards."""
    manifest = json.loads((checkpoint / "manifest.json").read_text())
    state: dict[str, dict[str, torch.Tensor]] = {}
    for shard in manifest["shards"]:
        state.update(torch.load(checkpoint / shard, map_location="cpu", weights_only=True)["params"])
    return state


def final_weights(run_dir: Path) -> dict[str, torch.Tensor]:
    newest = run_dir / "checkpoints" / published(run_dir)[-1]
    return {name: entry["weight"] for name, entry in checkpoint_state(newest).items()}


def assert_clean_failure(result: subprocess.CompletedProcess[str], *fragments: str) -> None:
    """Exit 2, one line on stderr naming what is wrong, no traceback."""
    assert result.returncode == 2, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def wait_until(condition: Any, process: subprocess.Popen[str], timeout: float = 180) -> None:
    """Until condition() holds; fails (with the process's stderr) if the process ends first or time runs out."""
    deadline = time.monotonic() + timeout
    while not condition():
        if process.poll() is not None:
            pytest.fail(f"exited ({process.returncode}) too early:\n{process.communicate()[1][-3000:]}")
        if time.monotonic() > deadline:
            process.kill()
            pytest.fail(f"timed out:\n{process.communicate()[1][-3000:]}")
        time.sleep(0.02)


def preempt_when(condition: Any, process: subprocess.Popen[str], run_dir: Path) -> int:
    """SIGTERM the run once condition() holds (a write in flight, say); the step it stopped at, once it has
    exited 75 (PREEMPTED_EXIT_CODE) after saving."""
    wait_until(condition, process)
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=240)
    assert process.returncode == 75, err[-3000:]
    return int(next(m["step"] for m in metrics(run_dir) if m["event"] == "preempted"))


def wait_for(path: Path, process: subprocess.Popen[str], timeout: float = 300) -> None:
    """Until path exists; fails if the process ends first."""
    deadline = time.monotonic() + timeout
    while not path.exists():
        if process.poll() is not None:
            _, err = process.communicate()
            pytest.fail(f"exited ({process.returncode}) before {path} appeared:\n{err[-3000:]}")
        if time.monotonic() > deadline:
            process.kill()
            pytest.fail(f"{path} did not appear within {timeout} s")
        time.sleep(0.02)


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    """A real S3-compatible server (versitygw) for the session; the test fails if it cannot be had."""
    server = start_server(tmp_path_factory.mktemp("s3-server"))
    yield server
    stop_server(server)


@pytest.fixture
def s3_url(s3_server: S3Server) -> str:
    """checkpoint.dir in a fresh bucket of the test server."""
    return f"s3://{s3_server.new_bucket()}/runs/ckpt"
