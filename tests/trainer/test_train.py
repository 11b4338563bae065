"""End-to-end CPU runs of the trainer: learning, torchrun with 2 processes, preemption, exact resume,
fallback from a corrupt checkpoint. Tiny model, bytes encoding, gloo: offline and quick."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from trainer import PREEMPTED_EXIT_CODE

from .conftest import (
    TINY_CONFIG,
    final_weights,
    metrics,
    run,
    run_overrides,
    stop_when,
    torchrun_command,
    trainer_command,
    trainer_env,
)

pytestmark = pytest.mark.slow
STEPS = 100
SETTINGS = {"train__max_steps": STEPS, "checkpoint__every_steps": 10, "checkpoint__keep_last": 2}


def train_losses(run_dir: Path, after_step: int = 0) -> dict[int, float]:
    return {
        m["step"]: m["loss"] for m in metrics(run_dir) if m["event"] == "train" and m["step"] > after_step
    }


def start_event(result: subprocess.CompletedProcess[str]) -> dict[str, object]:
    return next(json.loads(line) for line in result.stdout.splitlines() if '"event": "start"' in line)


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory: pytest.TempPathFactory) -> Path:
    run_dir = tmp_path_factory.mktemp("uninterrupted")
    result = run(trainer_command("train", TINY_CONFIG, run_overrides(run_dir, **SETTINGS)))
    assert result.returncode == 0, result.stderr
    return run_dir


def test_start_event_and_summary_give_the_time_to_first_step(uninterrupted: Path) -> None:
    start = next(m for m in metrics(uninterrupted) if m["event"] == "start")
    parts = ["startup_s", "data_s", "engine_s", "resume_s", "prepare_s", "first_step_s"]
    assert all(start[part] >= 0 for part in parts), start
    assert start["zero_stage"] == 0
    # the parts cover the whole time from the process start (each rounded to the millisecond)
    assert abs(sum(start[part] for part in parts) - start["time_to_first_step_s"]) < 0.01
    assert 0 < start["time_to_first_step_s"] < 120
    # the same instants on the wall clock, in order, for the e2e timeline (tests/e2e/timeline.py)
    at = start["at"]
    order = [
        "process",
        "imported",
        "rendezvous",
        "startup",
        "data",
        "engine",
        "resume",
        "prepare",
        "first_step",
    ]
    assert list(at) == order and [at[n] for n in order] == sorted(at.values()), at
    assert abs(at["first_step"] - at["process"] - start["time_to_first_step_s"]) < 0.01
    summary = json.loads((uninterrupted / "output" / "summary.json").read_text())
    assert summary["time_to_first_step_s"] == start["time_to_first_step_s"]
    assert summary["compile_s"] is None  # CPU: not compiled


def test_loss_falls_on_real_text(uninterrupted: Path) -> None:
    records = metrics(uninterrupted)
    train = [r for r in records if r["event"] == "train"]
    assert set(train[0]) >= {"step", "loss", "lr", "tokens_per_sec", "mfu", "grad_norm"}
    assert train[0]["mfu"] is None  # CPU: no peak to compare with
    assert train[0]["loss"] > 4.5 and train[-1]["loss"] < 3.0  # ln(257) = 5.55 at the start
    summary = json.loads((uninterrupted / "output" / "summary.json").read_text())
    assert summary["final_step"] == STEPS and summary["val_loss"] < 3.2 and summary["tokens_per_sec"] > 0
    # keep_last=2 published checkpoints, each with its manifest; nothing half-written
    checkpoints = sorted(p.name for p in (uninterrupted / "checkpoints").iterdir())
    assert checkpoints == ["step_000090", "step_000100"]
    assert (uninterrupted / "checkpoints" / "step_000100" / "manifest.json").is_file()


def test_sigterm_saves_then_resume_is_bit_exact(uninterrupted: Path, tmp_path: Path) -> None:
    args = trainer_command("train", TINY_CONFIG, run_overrides(tmp_path, **SETTINGS))
    process = subprocess.Popen(args, cwd=uninterrupted.parents[1], env=trainer_env(), text=True,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip
    code, _, err = stop_when(process, tmp_path / "checkpoints" / "step_000020")
    assert code == PREEMPTED_EXIT_CODE, err
    preempted = next(m for m in metrics(tmp_path) if m["event"] == "preempted")
    stopped_at = preempted["step"]
    assert 20 <= stopped_at < STEPS
    # when SIGTERM arrived and when the stop's checkpoint was published (the recovery's timeline)
    assert 0 <= preempted["at"] - preempted["signal_at"] < 60
    assert (tmp_path / "checkpoints" / f"step_{stopped_at:06d}" / "manifest.json").is_file()

    resumed = run(args)
    assert resumed.returncode == 0, resumed.stderr
    assert start_event(resumed)["resumed_from"] == f"step_{stopped_at:06d}"
    assert train_losses(tmp_path, after_step=stopped_at) == train_losses(uninterrupted, after_step=stopped_at)
    expected = final_weights(uninterrupted)
    for name, tensor in final_weights(tmp_path).items():
        assert torch.equal(tensor, expected[name]), name


def test_corrupt_newest_checkpoint_falls_back(uninterrupted: Path, tmp_path: Path) -> None:
    shutil.copytree(uninterrupted / "checkpoints", tmp_path / "checkpoints")
    newest = tmp_path / "checkpoints" / "step_000100" / "shard_00000.pt"
    data = bytearray(newest.read_bytes())
    data[len(data) // 2] ^= 0xFF
    newest.write_bytes(bytes(data))
    # saves interrupted by a crash: of a run that is gone, and of the trainer before run ids
    abandoned = [tmp_path / "checkpoints" / name for name in ("step_000110.tmp-0123abcd", "step_000120.tmp")]
    for path in abandoned:
        path.mkdir()
        (path / "shard_00000.pt").write_bytes(b"half")

    result = run(trainer_command("train", TINY_CONFIG, run_overrides(tmp_path, **SETTINGS)))
    assert result.returncode == 0, result.stderr
    assert "step_000100: shard_00000.pt does not match its checksum" in result.stderr
    assert start_event(result)["resumed_from"] == "step_000090"
    assert not any(path.exists() for path in abandoned)
    expected = final_weights(uninterrupted)
    assert all(torch.equal(t, expected[n]) for n, t in final_weights(tmp_path).items())


def test_two_processes_preempted_through_launch_resume_like_uninterrupted(tmp_path: Path) -> None:
    """2 ranks, ZeRO-1 (optimizer state partitioned), gloo: torchrun directly, then `launch` from
    Kubeflow's variables, stopped by SIGTERM to launch, restarted."""
    settings = {**SETTINGS, "train__max_steps": 60, "train__zero_stage": 1}
    reference = tmp_path / "reference"
    result = run(torchrun_command(2, TINY_CONFIG, run_overrides(reference, **settings)))
    assert result.returncode == 0, result.stderr[-3000:]
    assert start_event(result)["world_size"] == 2
    # each rank wrote its share: the parameters split between the shards, each rank's RNG in its own
    assert {p.name for p in (reference / "checkpoints" / "step_000060").iterdir()} == {
        "manifest.json", "shard_00000.pt", "shard_00001.pt"}  # fmt: skip

    preempted = tmp_path / "preempted"
    args = trainer_command("launch", TINY_CONFIG, run_overrides(preempted, **settings))
    env = trainer_env(PET_NNODES="1", PET_NPROC_PER_NODE="2", PET_NODE_RANK="0", PET_MASTER_ADDR="127.0.0.1")
    process = subprocess.Popen(args, cwd=reference.parents[1], env=env, text=True,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip
    code, _, err = stop_when(process, preempted / "checkpoints" / "step_000020")
    assert code == PREEMPTED_EXIT_CODE, err[-3000:]
    stopped_at = next(m["step"] for m in metrics(preempted) if m["event"] == "preempted")
    assert (preempted / "checkpoints" / f"step_{stopped_at:06d}" / "manifest.json").is_file()

    resumed = subprocess.run(
        args, cwd=reference.parents[1], env=env, text=True, capture_output=True, timeout=240
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert start_event(resumed)["resumed_from"] == f"step_{stopped_at:06d}"
    expected = final_weights(reference)
    for name, tensor in final_weights(preempted).items():
        torch.testing.assert_close(tensor, expected[name], atol=1e-4, rtol=0)


# Runs the trainer in-process, then lists the threads still alive where the interpreter would start its
# teardown (the last line of stdout).
# Each rank writes its own listing to a file: printed, the two ranks' lines can interleave on the shared
# stdout ("pythonpython", CI on 2026-11-30).
TRAIN_THEN_LIST_THREADS = """
import os
import sys
from pathlib import Path
from trainer.cli import main
code = main(sys.argv[1:])
threads = sorted(p.read_text().strip() for p in Path("/proc/self/task").glob("*/comm"))
Path(os.environ["THREAD_LISTINGS"], f"rank{os.environ['RANK']}").write_text(" ".join(threads))
sys.exit(code)
"""


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="lists threads through Linux's /proc")
def test_no_process_group_thread_outlives_the_run(tmp_path: Path) -> None:
    """The C++ threads of the gloo groups and of the TCPStore are joined before the interpreter's teardown,
    which __main__'s plain sys.exit runs: none is left there to be destroyed while still joinable. Two ranks,
    so that ZeRO 1's optimizer (and the groups its gradient hooks hold) is built: one rank runs ZeRO 0."""
    settings = {"train__max_steps": 4, "checkpoint__every_steps": 2, "train__zero_stage": 1}
    overrides = run_overrides(tmp_path, **settings)
    listed = tmp_path / "threads"
    listed.mkdir()
    result = run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2", "--no-python",
         sys.executable, "-c", TRAIN_THEN_LIST_THREADS, "train", "--config", str(TINY_CONFIG), *overrides],
        THREAD_LISTINGS=str(listed),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert '"zero_stage": 1' in result.stdout  # the start event: ZeRO 1 really ran
    assert sorted(path.name for path in listed.iterdir()) == ["rank0", "rank1"]
    listings = [path.read_text().split() for path in sorted(listed.iterdir())]
    assert all(listings), listings  # each names at least its main thread
    for threads in listings:
        assert not {"pt_gloo_runloop", "gloo_tcp_loop", "pt_tcpstore_uv"} & set(threads), threads
