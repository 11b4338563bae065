"""Checkpoints in whole runs: Trainer.resume (which checkpoint, what a run takes back), then real
processes: background writes on a slow volume, a crash or SIGTERM during a write, a resized job."""

from __future__ import annotations

import itertools
import json
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from trainer import PREEMPTED_EXIT_CODE
from trainer.checkpoint.layout import (
    tag_for,
)
from trainer.checkpoint.local import read_manifest
from trainer.config import ConfigError, parse_stop_at
from trainer.distributed import free_port
from trainer.train import Trainer

from ..conftest import (
    REPO,
    TINY_CONFIG,
    metrics,
    preempt_when,
    run,
    run_overrides,
    trainer_command,
    trainer_env,
    wait_until,
)
from ..conftest import published as published_names
from .conftest import (
    FakeEngine,
    Harness,
    block_buffered,
)

IDENTITY = {"n_layer": 2, "n_head": 2, "n_embd": 64, "vocab_size": 257}


class Exporter:
    def __init__(self) -> None:
        self.checkpoints: list[tuple[int, float]] = []

    def checkpointed(self, step: int, unix_time: float) -> None:
        self.checkpoints.append((step, unix_time))


def resuming(harness: Harness, stage: int = 0, stop_at: str | None = None, exporter: Any = None) -> Trainer:
    """A Trainer holding only what resume reads (no data, model or DeepSpeed engine is built)."""
    trainer = Trainer.__new__(Trainer)
    trainer.store = harness.store
    trainer.identity = dict(IDENTITY)
    trainer.engine = SimpleNamespace(engine=FakeEngine(stage), zero_stage=stage, schedule=None)  # type: ignore[assignment]
    trainer.context = harness.store.context
    trainer.step, trainer.last_loss, trainer.stop_reason = 0, None, None
    trainer.stop_condition = None if stop_at is None else parse_stop_at(stop_at)
    trainer.exporter = exporter
    return trainer


def saved(harness: Harness, step: int, stage: int = 1, **client_state: Any) -> None:
    harness.store.save(FakeEngine(stage), step, {"step": step, **client_state}, {"model": IDENTITY})
    harness.store.wait()


def test_a_run_without_a_checkpoint_starts_at_step_0_after_clearing_dead_runs_staging(
    make_store: Any,
) -> None:
    harness = make_store()
    (harness.root / "step_000020.tmp-0000dead0000").mkdir()  # its run's lock is free: it is gone
    exporter = Exporter()
    trainer = resuming(harness, exporter=exporter)
    assert trainer.resume() is None
    assert (trainer.step, trainer.last_loss, exporter.checkpoints) == (0, None, [])
    assert not (harness.root / "step_000020.tmp-0000dead0000").exists() and harness.world.barriers == 1


def test_a_run_resumes_the_newest_complete_checkpoint(
    make_store: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    harness = make_store()
    saved(harness, 10, loss=3.0)
    saved(harness, 20, loss=2.5)
    (harness.root / "step_000020" / "shard_00000.pt").write_bytes(b"torn")
    exporter = Exporter()
    trainer = resuming(harness, stage=1, exporter=exporter)
    assert trainer.resume() == "step_000010"
    assert harness.state.restored_into == [trainer.engine.engine]  # loaded into this run's engine
    assert (trainer.step, trainer.last_loss, trainer.stop_reason) == (10, 3.0, None)
    assert harness.state.restored[-1][0]["run"]["client_state"] == {"step": 10, "loss": 3.0}
    assert exporter.checkpoints == [(10, (harness.root / "step_000010").stat().st_mtime)]
    assert capsys.readouterr().err == (  # saved on 1 rank at ZeRO 1, resumed so: no note
        f"warning: skipping checkpoint {harness.root / 'step_000020'}: shard_00000.pt has 4 bytes, the manifest "
        f"says {read_manifest(harness.root / 'step_000010')[0]['files']['shard_00000.pt']['bytes']}\n"  # type: ignore[index]
    )


def test_a_resume_at_another_size_or_stage_is_noted_once(
    make_store: Any, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    harness = make_store()
    saved(harness, 10, stage=0)  # one rank runs ZeRO 0
    capsys.readouterr()
    assert resuming(harness, stage=0).resume() == "step_000010"
    assert capsys.readouterr().err == ""  # the same size and stage: nothing to note
    note = "resuming step_000010 (written by 1 rank(s), ZeRO stage 0) on {} rank(s), ZeRO stage {}\n"
    assert resuming(harness, stage=1).resume() == "step_000010"
    assert capsys.readouterr().err == note.format(1, 1)
    manifest = read_manifest(harness.root / "step_000010")[0]
    main = make_store(world_size=2)
    with monkeypatch.context() as patched:
        stderr = block_buffered(patched)  # the note is out at once, whatever buffers stderr
        assert resuming(main, stage=0).resume() == "step_000010"
        assert stderr.getvalue().decode() == note.format(2, 0)
    other = make_store(rank=1, world_size=2, from_main=["00000000000b", ("step_000010", manifest)])
    trainer = resuming(other, stage=1)
    assert trainer.resume() == "step_000010" and trainer.step == 10
    assert "resuming" not in capsys.readouterr().err  # rank 0 says it


def test_a_checkpoint_of_another_model_is_refused(make_store: Any) -> None:
    harness = make_store()
    saved(harness, 10)
    trainer = resuming(harness)
    trainer.identity["n_layer"] = 4
    with pytest.raises(ConfigError) as refused:
        trainer.resume()
    assert str(refused.value) == (
        f"checkpoint.dir: {harness.root / 'step_000010'} holds a different model ({{'n_embd': 64, 'n_head': 2, "
        "'n_layer': 2, 'vocab_size': 257}) than this config ({'n_layer': 4, 'n_head': 2, 'n_embd': 64, "
        "'vocab_size': 257}); use another checkpoint.dir"
    )  # the manifest's keys sorted: the same text for the same model whoever wrote it
    assert harness.state.restored == [] and trainer.step == 0


@pytest.mark.parametrize(
    ("stop_at_then", "stop_at_now", "reason"),
    [
        ("val_loss<=2.5", "val_loss <= 2.5", "val_loss 2.4 <= 2.5"),  # done already: the run ends at once
        ("val_loss<=2.5", "val_loss <= 2", None),  # a changed train.stop_at trains on
        ("val_loss<=2.5", None, None),
        (None, "val_loss <= 2.5", None),  # it had not stopped early
    ],
)
def test_an_early_stop_is_remembered_only_for_the_same_stop_at(
    make_store: Any, stop_at_then: str | None, stop_at_now: str | None, reason: str | None
) -> None:
    harness = make_store()
    stopped = None if stop_at_then is None else {"stop_at": stop_at_then, "reason": "val_loss 2.4 <= 2.5"}
    saved(harness, 10, loss=2.6, stopped_early=stopped)
    trainer = resuming(harness, stop_at=stop_at_now)
    assert trainer.resume() == "step_000010"
    assert trainer.stop_reason == reason


def test_a_checkpoint_gone_since_it_was_read_counts_as_written_now(
    make_store: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    harness = make_store()
    saved(harness, 10)

    def gone(tag: str) -> float:
        raise FileNotFoundError(tag)

    monkeypatch.setattr(harness.store.storage, "published_at", gone)
    exporter = Exporter()
    before = time.time()
    resuming(harness, exporter=exporter).resume()
    ((step, written),) = exporter.checkpoints
    assert step == 10 and before <= written <= time.time()


SLOW_VOLUME = """
import sys, time
import trainer.checkpoint.local as local
from trainer.cli import main

delays = dict((tag, float(s)) for tag, s in (item.split("=") for item in sys.argv[1].split(",")))
real_write_shard = local.LocalStorage.write_shard

def slow_write_shard(self, staging, name, state):
    record = real_write_shard(self, staging, name, state)
    time.sleep(delays.get(staging.split(".")[0], 0.0))
    return record

local.LocalStorage.write_shard = slow_write_shard
sys.exit(main(sys.argv[2:]))
"""

RUN_SETTINGS = {"train__max_steps": 40, "checkpoint__every_steps": 10, "checkpoint__keep_last": 5,
                "output__log_every": 1}  # fmt: skip


def slow_volume_command(run_dir: Path, delays: str, **settings: object) -> list[str]:
    overrides = run_overrides(run_dir, **{**RUN_SETTINGS, **settings})
    return [sys.executable, "-c", SLOW_VOLUME, delays, "train", "--config", str(TINY_CONFIG), *overrides]


def checkpoint_events(run_dir: Path) -> dict[int, dict[str, Any]]:
    return {m["step"]: m for m in metrics(run_dir) if m["event"] == "checkpoint"}


def shard_staged(run_dir: Path, step: int) -> bool:
    return any((run_dir / "checkpoints").glob(f"{tag_for(step)}.tmp-*/shard_00000.pt"))


@pytest.mark.slow
def test_a_slow_write_does_not_block_the_step_loop(tmp_path: Path) -> None:
    """Writing checkpoint 20 takes 3 s more: the steps after it run meanwhile, the save itself blocks the
    loop only for the snapshot, and the save at step 30 waits for the write in flight."""
    result = run(slow_volume_command(tmp_path, "step_000020=3"))
    assert result.returncode == 0, result.stderr[-3000:]
    events = checkpoint_events(tmp_path)
    assert sorted(events) == [10, 20, 30, 40]
    for step, event in events.items():
        snapshot_s = event["blocked_s"] - event["waited_s"]  # the step loop's own time in the save
        assert snapshot_s <= 0.5, (step, event)  # issue 17's bound for GPT-2 124M; ms for the tiny model
    assert events[20]["write_s"] >= 3.0
    assert events[30]["waited_s"] > 1.0  # the next save waited rather than skipping
    order = [(m["event"], m["step"]) for m in metrics(tmp_path) if m["event"] in ("train", "checkpoint")]
    # ten steps ran while checkpoint 20 was being written (it was published only after step 30)
    assert order.index(("train", 30)) < order.index(("checkpoint", 20))
    for step in events:
        assert read_manifest(tmp_path / "checkpoints" / tag_for(step))[1] is None


@pytest.mark.slow
def test_a_crash_during_a_write_leaves_the_previous_checkpoint_newest(tmp_path: Path) -> None:
    args = slow_volume_command(tmp_path, "step_000020=120")
    process = subprocess.Popen(args, cwd=REPO, env=trainer_env(), text=True,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip
    wait_until(lambda: shard_staged(tmp_path, 20), process)
    process.kill()  # while checkpoint 20's shard is on disk and its manifest not yet written
    process.communicate()
    assert published_names(tmp_path) == ["step_000010"]
    resumed = run(slow_volume_command(tmp_path, "none=0"))
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    starts = [m for m in metrics(tmp_path) if m["event"] == "start"]
    assert starts[-1]["resumed_from"] == "step_000010"
    assert not list((tmp_path / "checkpoints").glob("*.tmp*"))  # the crashed run's staging is gone
    assert published_names(tmp_path) == ["step_000010", "step_000020", "step_000030", "step_000040"]


@pytest.mark.slow
def test_sigterm_during_a_write_ends_with_complete_checkpoints(tmp_path: Path) -> None:
    args = slow_volume_command(tmp_path, "step_000020=4", train__max_steps=1000)
    process = subprocess.Popen(args, cwd=REPO, env=trainer_env(), text=True,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip
    stopped_at = preempt_when(lambda: shard_staged(tmp_path, 20), process, tmp_path)
    assert stopped_at > 20
    assert published_names(tmp_path) == ["step_000010", "step_000020", tag_for(stopped_at)]
    for name in published_names(tmp_path):
        assert read_manifest(tmp_path / "checkpoints" / name)[1] is None, name
    assert sorted(checkpoint_events(tmp_path)) == [10, 20, stopped_at]
    assert not list((tmp_path / "checkpoints").glob("*.tmp*"))


# ---- end-to-end: a resized job resumes (issue 18 case 2) ----

RESIZE_SETTINGS = {"train__max_steps": 80, "checkpoint__every_steps": 10, "checkpoint__keep_last": 2,
                   "train__zero_stage": 1, "output__log_every": 2, "train__warmup_steps": 10}  # fmt: skip


def phases(run_dir: Path) -> list[list[dict[str, Any]]]:
    """metrics.jsonl split into the runs that appended to it, each starting with its start event."""
    runs: list[list[dict[str, Any]]] = []
    for record in metrics(run_dir):
        if record["event"] == "start":
            runs.append([])
        runs[-1].append(record)
    return runs


def next_checkpoint_after(run_dir: Path, count: int = 2) -> Path:
    """The checkpoint `count` saves after the newest published one: a run stopped there has trained on."""
    newest = int(published_names(run_dir)[-1][5:]) if published_names(run_dir) else 0
    return run_dir / "checkpoints" / tag_for((newest // 10 + count) * 10)


def stop_all(processes: list[subprocess.Popen[str]], ready: Path, timeout: float = 240) -> list[int]:
    """SIGTERM every process (every pod of a preempted job) once `ready` exists; their exit codes."""
    deadline = time.monotonic() + timeout
    while not ready.exists():
        if any(p.poll() is not None for p in processes) or time.monotonic() > deadline:
            for p in processes:
                p.kill()
            pytest.fail(
                f"{ready} did not appear:\n" + "\n".join(p.communicate()[1][-2000:] for p in processes)
            )
        time.sleep(0.02)
    for process in processes:
        process.send_signal(signal.SIGTERM)
    for process in processes:
        process.communicate(timeout=timeout)
    return [p.returncode for p in processes]


def launch_env(nodes: int, node_rank: int, processes: int, port: int) -> dict[str, str]:
    return trainer_env(PET_NNODES=str(nodes), PET_NODE_RANK=str(node_rank), PET_NPROC_PER_NODE=str(processes),
                       PET_MASTER_ADDR="127.0.0.1", PET_MASTER_PORT=str(port))  # fmt: skip


@pytest.mark.slow
def test_a_resized_job_resumes_and_continues_the_loss_curve(tmp_path: Path) -> None:
    """train.zero_stage 1, stopped by SIGTERM and restarted at another size each time: 1 rank (which runs ZeRO
    0) -> 2 ranks on one node (ZeRO 1) -> 2 nodes of 1 rank (each node's launcher building the token cache at
    once) -> 1 rank (ZeRO 0), to the end: every resize also changes the stage the engine runs."""
    reference = tmp_path / "reference"
    result = run(trainer_command("train", TINY_CONFIG, run_overrides(reference, **RESIZE_SETTINGS)))
    assert result.returncode == 0, result.stderr[-3000:]
    resized = tmp_path / "resized"
    args = trainer_command("launch", TINY_CONFIG, run_overrides(resized, **RESIZE_SETTINGS))

    def start(env: dict[str, str]) -> subprocess.Popen[str]:
        return subprocess.Popen(args, cwd=REPO, env=env, text=True,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip

    ready = next_checkpoint_after(resized)
    assert stop_all([start(launch_env(1, 0, 1, free_port()))], ready) == [PREEMPTED_EXIT_CODE]
    ready = next_checkpoint_after(resized)
    assert stop_all([start(launch_env(1, 0, 2, free_port()))], ready) == [PREEMPTED_EXIT_CODE]
    ready, port = next_checkpoint_after(resized), free_port()
    nodes = [start(launch_env(2, rank, 1, port)) for rank in (0, 1)]
    assert stop_all(nodes, ready) == [PREEMPTED_EXIT_CODE] * 2
    final = start(launch_env(1, 0, 1, free_port()))
    _, err = final.communicate(timeout=240)
    assert final.returncode == 0, err[-3000:]

    # Tolerance: the loss of the same step in an uninterrupted 1-rank run. After a resize the batches of
    # ranks other than 0 differ (and the global batch with the world size), so the curves are not equal:
    # measured gaps 0.005-0.093 per logged step (2026-11-30). A resume that lost the weights starts again
    # near ln(257) = 5.55, 2.4 above the curve.
    expected = {m["step"]: m["loss"] for m in metrics(reference) if m["event"] == "train"}
    runs = phases(resized)
    assert [r[0]["world_size"] for r in runs] == [1, 2, 2, 1]
    assert [r[0]["zero_stage"] for r in runs] == [0, 1, 1, 0]
    for previous, current in itertools.pairwise(runs):
        stopped = next(m["step"] for m in previous if m["event"] == "preempted")
        assert current[0]["resumed_from"] == tag_for(stopped)
        gaps = {m["step"]: abs(m["loss"] - expected[m["step"]]) for m in current if m["event"] == "train"}
        assert min(gaps) <= stopped + 2 and max(gaps.values()) <= 0.2, (stopped, gaps)
        assert statistics.mean(gaps.values()) <= 0.1, (stopped, gaps)
    summary = json.loads((resized / "output" / "summary.json").read_text())
    reference_summary = json.loads((reference / "output" / "summary.json").read_text())
    assert summary["final_step"] == RESIZE_SETTINGS["train__max_steps"] and summary["world_size"] == 1
    assert abs(summary["val_loss"] - reference_summary["val_loss"]) <= 0.1


# A checkpoint as the trainer wrote it before format 2 (DeepSpeed's save_checkpoint: ZeRO partitions per
