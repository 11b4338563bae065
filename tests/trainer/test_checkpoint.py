"""trainer.checkpoint: a published checkpoint is trusted only while its files match its manifest; it is
published once, atomically, never over a complete one; unpublished directories of live runs are left alone;
writes run in the background; a resized job resumes; the earlier layout resumes at its size or is refused."""

from __future__ import annotations

import hashlib
import itertools
import json
import shutil
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import torch

from tests.s3_server import S3Server
from trainer import PREEMPTED_EXIT_CODE
from trainer.checkpoint import (
    LocalStorage,
    Storage,
    file_record,
    read_manifest,
    resume_stage,
    shard_name,
    tag_for,
)
from trainer.config import load_config
from trainer.distributed import free_port

from .conftest import (
    REPO,
    TINY_CONFIG,
    assert_clean_failure,
    metrics,
    preempt_when,
    run,
    run_overrides,
    trainer_command,
    trainer_env,
    wait_until,
)
from .conftest import published as published_names


class Backend:
    """A Storage under test and direct access to what it stores, bypassing it: the same shared rules are
    tested on a directory (LocalStorage) and on a real S3-compatible server (S3Storage)."""

    storage: Storage

    def stage(self, staging: str, name: str, content: bytes) -> None:
        """Put a file into a staging name as a writer would, bypassing the storage."""
        raise NotImplementedError

    def replace(self, tag: str, name: str, content: bytes | None) -> None:
        """Overwrite (None: delete) a file of a published checkpoint, bypassing the storage."""
        raise NotImplementedError

    def names(self) -> list[str]:
        """Every file stored, relative to checkpoint.dir, sorted."""
        raise NotImplementedError


class LocalBackend(Backend):
    def __init__(self, root: Path) -> None:
        self.root = root
        self.storage = LocalStorage(str(root))

    def stage(self, staging: str, name: str, content: bytes) -> None:
        (self.root / staging / name).parent.mkdir(parents=True, exist_ok=True)
        (self.root / staging / name).write_bytes(content)

    def replace(self, tag: str, name: str, content: bytes | None) -> None:
        if content is None:
            (self.root / tag / name).unlink()
        else:
            (self.root / tag / name).write_bytes(content)

    def names(self) -> list[str]:
        return sorted(p.relative_to(self.root).as_posix() for p in self.root.rglob("*") if p.is_file())


class S3Backend(Backend):
    def __init__(self, url: str, client: Any) -> None:
        from trainer.s3_storage import S3Storage

        self.s3 = S3Storage(url)
        self.storage = self.s3
        self.client = client

    def put(self, name: str, content: bytes) -> None:
        self.client.put_object(Bucket=self.s3.bucket, Key=self.s3.key(name), Body=content)

    def stage(self, staging: str, name: str, content: bytes) -> None:
        self.put(f"{self.s3.data_prefix(staging)}{name}", content)

    def replace(self, tag: str, name: str, content: bytes | None) -> None:
        if name != "manifest.json":
            name = f"{json.loads(self.raw(f'{tag}/manifest.json'))['objects']}{name}"
        if content is None:
            self.client.delete_object(Bucket=self.s3.bucket, Key=self.s3.key(f"{tag}/{name}"))
        else:
            self.put(f"{tag}/{name}", content)

    def raw(self, name: str) -> bytes:
        return bytes(self.client.get_object(Bucket=self.s3.bucket, Key=self.s3.key(name))["Body"].read())

    def names(self) -> list[str]:
        pages = self.client.get_paginator("list_objects_v2").paginate(Bucket=self.s3.bucket)
        return sorted(self.s3.relative(o["Key"]) for page in pages for o in page.get("Contents", []))


@pytest.fixture(params=["local", pytest.param("s3", marks=pytest.mark.slow)])
def backend(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Backend:
    """Each shared-rule test on a fresh directory and on a fresh bucket of the real S3 test server."""
    if request.param == "local":
        return LocalBackend(tmp_path)
    server: S3Server = request.getfixturevalue("s3_server")
    for name, value in server.environment().items():
        monkeypatch.setenv(name, value)
    return S3Backend(f"s3://{server.new_bucket()}/runs/ckpt", server.client())


def record(content: bytes) -> dict[str, object]:
    """A manifest entry from the published formula: size in bytes and sha256 of the content."""
    return {"bytes": len(content), "sha256": hashlib.sha256(content).hexdigest()}


def staged(backend: Backend, staging: str, content: bytes) -> dict[str, dict[str, object]]:
    """A staging name holding a shard and a nested file; their manifest records."""
    backend.stage(staging, "model.pt", content)
    backend.stage(staging, "sub/rng.pt", b"rng")
    return {"model.pt": record(content), "sub/rng.pt": record(b"rng")}


def publish_step(backend: Backend, step: int, run: str, content: bytes = b"weights") -> dict[str, Any]:
    files = staged(backend, f"{tag_for(step)}.tmp-{run}", content)
    manifest = {"format": 2, "step": step, "world_size": 2, "model": {"n_layer": 2}, "files": files}
    assert backend.storage.publish(f"{tag_for(step)}.tmp-{run}", tag_for(step), manifest)
    return manifest


def test_manifest_lists_every_file(backend: Backend) -> None:
    publish_step(backend, 7, "aa")
    manifest, problem = backend.storage.verify(tag_for(7))
    assert problem is None and manifest is not None
    assert (manifest["step"], manifest["world_size"], manifest["model"]) == (7, 2, {"n_layer": 2})
    assert set(manifest["files"]) == {"model.pt", "sub/rng.pt"}
    assert manifest["files"]["model.pt"] == {"bytes": 7, "sha256": hashlib.sha256(b"weights").hexdigest()}
    assert backend.storage.published() == [(7, "step_000007")]
    # the staging directory became the checkpoint; on S3 the files stay under the run's prefix
    expected = {
        LocalBackend: ["step_000007/manifest.json", "step_000007/model.pt", "step_000007/sub/rng.pt"],
        S3Backend: ["step_000007/aa/model.pt", "step_000007/aa/sub/rng.pt", "step_000007/manifest.json"],
    }
    assert backend.names() == expected[type(backend)]


def test_missing_truncated_or_altered_files_are_detected(backend: Backend) -> None:
    publish_step(backend, 7, "aa")
    verify = backend.storage.verify
    backend.replace(tag_for(7), "model.pt", b"weighs!")
    assert verify(tag_for(7)) == (None, "model.pt does not match its checksum")
    backend.replace(tag_for(7), "model.pt", b"w")
    assert verify(tag_for(7)) == (None, "model.pt has 1 bytes, the manifest says 7")
    backend.replace(tag_for(7), "model.pt", b"weights")
    assert verify(tag_for(7))[1] is None
    backend.replace(tag_for(7), "sub/rng.pt", None)
    assert verify(tag_for(7)) == (None, "sub/rng.pt is missing")
    backend.replace(tag_for(7), "manifest.json", b"{not json")
    assert verify(tag_for(7)) == (None, "no readable manifest.json (JSONDecodeError)")


def test_local_manifest_is_read_from_the_directory(tmp_path: Path) -> None:
    publish_step(LocalBackend(tmp_path), 7, "aa")
    (tmp_path / tag_for(7) / "model.pt").write_bytes(b"weighs!")
    assert read_manifest(tmp_path / tag_for(7)) == (None, "model.pt does not match its checksum")
    assert file_record(tmp_path / tag_for(7) / "sub" / "rng.pt") == record(b"rng")


def test_tags_sort_by_step() -> None:
    assert tag_for(100) == "step_000100" and sorted([tag_for(99), tag_for(100)]) == [
        "step_000099",
        "step_000100",
    ]
    assert shard_name(3) == "shard_00003.pt"


def test_a_published_checkpoint_is_never_replaced_by_a_second_publisher(backend: Backend) -> None:
    """Two runs publishing the same step (e.g. a zombie pod still writing): the first stays, whole."""
    storage = backend.storage
    first = staged(backend, "step_000010.tmp-aa", b"first run")
    second = staged(backend, "step_000010.tmp-bb", b"second run, longer")
    assert storage.publish("step_000010.tmp-aa", "step_000010", {"format": 2, "step": 10, "files": first})
    assert not storage.publish(
        "step_000010.tmp-bb", "step_000010", {"format": 2, "step": 10, "files": second}
    )
    manifest, problem = storage.verify("step_000010")
    assert problem is None and manifest is not None and manifest["files"] == first
    assert storage.published() == [(10, "step_000010")]
    assert storage.staged_problem("step_000010.tmp-bb", second) is None  # the loser's files, unpublished
    storage.remove("step_000010.tmp-bb", "bb")
    assert storage.staged_problem("step_000010.tmp-bb", second) == "model.pt is missing"
    assert storage.verify("step_000010")[1] is None


def test_removal_never_leaves_a_half_deleted_checkpoint_that_looks_published(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    storage = LocalStorage(str(tmp_path))
    for step in (10, 20):
        publish_step(LocalBackend(tmp_path), step, "aa")
    deleted: list[str] = []
    real_rmtree = shutil.rmtree

    def observe(path: Any, *args: Any, **kwargs: Any) -> None:
        if Path(str(path)).exists():
            deleted.append(Path(str(path)).name)
            assert storage.published() == [(20, "step_000020")]  # step 10 is already out of the pattern
        real_rmtree(path, *args, **kwargs)

    monkeypatch.setattr("trainer.checkpoint.shutil.rmtree", observe)
    storage.remove("step_000010", "cc")
    assert "step_000010.tmp-cc.old" in deleted
    assert sorted(p.name for p in tmp_path.iterdir()) == ["step_000020"]
    storage.remove("step_000010", "cc")  # already gone: nothing to do


HOLD_RUN_LOCK = """
import sys, time
from pathlib import Path
from trainer.shared_files import HeldLock
lock = HeldLock(Path(sys.argv[1]))
assert lock.acquire() == "held"
print("held", flush=True)
time.sleep(120)
"""


@pytest.mark.slow
def test_only_unpublished_directories_of_dead_runs_are_removed(tmp_path: Path) -> None:
    """A run's rank 0 holds .run-<id>.lock while it lives; its staging directories are left alone."""
    storage = LocalStorage(str(tmp_path))
    names = ["step_000010.tmp-a1", "step_000020.tmp-b2", "step_000020.tmp-b2.old", "step_000030.tmp-c3",
             "step_000040.tmp", "step_000050"]  # fmt: skip
    for name in names:
        (tmp_path / name).mkdir()
    (tmp_path / ".run-a1.lock").touch()  # a run that crashed: its lock file is there, nobody holds it
    live = subprocess.Popen([sys.executable, "-c", HOLD_RUN_LOCK, str(tmp_path / ".run-b2.lock")],
                            cwd=REPO, env=trainer_env(), stdout=subprocess.PIPE, text=True)  # fmt: skip
    try:
        assert live.stdout is not None and live.stdout.readline().strip() == "held"
        others = storage.remove_abandoned(own_run="c3")
        remaining = sorted(p.name for p in tmp_path.iterdir())
    finally:
        live.kill()
        live.wait()
    assert others == ["b2"]
    # a1: dead (lock free); b2: alive (lock held by another process); c3: this run; step_000040.tmp: the
    # staging name of the trainer before run ids; step_000050: published.
    assert remaining == [".run-b2.lock", "step_000020.tmp-b2", "step_000020.tmp-b2.old", "step_000030.tmp-c3",
                         "step_000050"]  # fmt: skip
    assert storage.remove_abandoned(own_run="c3") == []  # b2 has died since
    assert sorted(p.name for p in tmp_path.iterdir()) == ["step_000030.tmp-c3", "step_000050"]


# ---- end-to-end: background writes (a slow volume), crashes and stop signals during a write ----

# `python -m trainer ...` whose checkpoint volume is slow: writing the shards of the named checkpoints takes
# that many seconds more (each shard is on disk, the checkpoint not yet published, during the wait).
# argv: "step_000020=3,step_000030=1", then the trainer's arguments.
SLOW_VOLUME = """
import sys, time
import trainer.checkpoint as checkpoint
from trainer.cli import main

delays = dict((tag, float(s)) for tag, s in (item.split("=") for item in sys.argv[1].split(",")))
real_write_shard = checkpoint.LocalStorage.write_shard

def slow_write_shard(self, staging, name, state):
    record = real_write_shard(self, staging, name, state)
    time.sleep(delays.get(staging.split(".")[0], 0.0))
    return record

checkpoint.LocalStorage.write_shard = slow_write_shard
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
# rank; an RNG file per rank; a manifest without "format"), after 3 steps of the tiny config on one rank, at
# train.zero_stage as that trainer ran it on one rank. argv: the trainer's --set overrides.
LEGACY_CHECKPOINT = """
import json, sys
from pathlib import Path
import torch
from trainer.checkpoint import file_record
from trainer.engine_state import rng_state
from trainer.config import load_config
from trainer.distributed import init_distributed, shutdown
from trainer.engine import build_engine, model_config
from trainer.model import GPT
from trainer.train import model_identity

context = init_distributed()
config = load_config(sys.argv[1], [a for a in sys.argv[2:] if a != "--set"])
torch.manual_seed(config.train.seed)
engine = build_engine(GPT(model_config(config, 257)), config, context.device, 1, stage=config.train.zero_stage)
batch = [(torch.randint(0, 257, (4, 64)),) * 2]
for _ in range(3):
    engine.train_step(batch)
root, tag = Path(config.checkpoint.dir), "step_000003"
client_state = {"step": 3, "data_position": {"step": 3, "seed": config.train.seed}, "loss": None}
engine.engine.save_checkpoint(str(root), tag=tag, client_state=client_state, save_latest=False)
torch.save(rng_state(), root / tag / "rng_rank00000.pt")
files = {p.relative_to(root / tag).as_posix(): file_record(p) for p in sorted((root / tag).rglob("*")) if p.is_file()}
manifest = {"model": model_identity(config, 257), "step": 3, "world_size": 1, "files": files}
(root / tag / "manifest.json").write_text(json.dumps(manifest))
engine.engine.destroy()
shutdown(context)
"""


def stage_choice(tmp_path: Path, world_size: int, zero_stage: int) -> tuple[int, str | None]:
    overrides = run_overrides(tmp_path, train__zero_stage=zero_stage)
    return resume_stage(load_config(TINY_CONFIG, overrides[1::2]), world_size)


def publish_legacy(tmp_path: Path, step: int, world_size: int, zero_stage: int) -> None:
    """A published checkpoint of the earlier layout as resume_stage sees it: a manifest without "format" and
    DeepSpeed's model-states file, whose ds_config holds the stage."""
    directory = tmp_path / "checkpoints" / tag_for(step)
    directory.mkdir(parents=True)
    torch.save(
        {"ds_config": {"zero_optimization": {"stage": zero_stage}}}, directory / "mp_rank_00_model_states.pt"
    )
    files = {"mp_rank_00_model_states.pt": file_record(directory / "mp_rank_00_model_states.pt")}
    manifest = {"step": step, "world_size": world_size, "files": files}
    (directory / "manifest.json").write_text(json.dumps(manifest))


def test_one_rank_runs_zero_0_whatever_a_checkpoint_of_this_layout_was_saved_at(tmp_path: Path) -> None:
    assert stage_choice(tmp_path, 1, 1) == (0, None)  # no checkpoint
    assert stage_choice(tmp_path, 2, 1) == (1, None)
    publish_legacy(tmp_path, 5, 1, 1)
    newer = tmp_path / "checkpoints" / tag_for(10)
    newer.mkdir()
    (newer / "manifest.json").write_text(json.dumps({"format": 2, "world_size": 2, "zero_stage": 1}))
    assert stage_choice(tmp_path, 1, 1) == (0, None)  # only the newest counts, and it is stage-independent
    assert stage_choice(tmp_path, 3, 2) == (2, None)


@pytest.mark.parametrize(
    ("saved", "world_size", "zero_stage", "runs", "refused"),
    [
        ((1, 1), 1, 1, 1, False),  # its own size and stage: one rank runs ZeRO 1 to load it
        ((1, 1), 1, 2, 0, True),  # another stage
        ((1, 1), 2, 1, 1, True),  # ZeRO 1's partitions of one rank cannot be split
        ((1, 2), 2, 1, 1, False),
        ((1, 2), 1, 1, 0, True),
        ((0, 2), 1, 1, 0, False),  # ZeRO 0 loads at any world size, into ZeRO 0
        ((0, 2), 2, 1, 1, True),
        ((2, 2), 2, 2, 2, False),
    ],
)
def test_a_checkpoint_of_the_earlier_layout_decides_the_stage_or_is_refused(
    tmp_path: Path, saved: tuple[int, int], world_size: int, zero_stage: int, runs: int, refused: bool
) -> None:
    saved_stage, saved_world = saved
    publish_legacy(tmp_path, 5, saved_world, saved_stage)
    stage, problem = stage_choice(tmp_path, world_size, zero_stage)
    assert stage == runs
    assert (problem is not None) == refused, problem
    if problem:
        assert f"ZeRO stage {saved_stage} on {saved_world} rank(s)" in problem
        assert f"cannot resume on {world_size} rank(s) running ZeRO stage {runs}" in problem
        assert f"run once more on {saved_world} rank(s) with train.zero_stage={saved_stage}" in problem


@pytest.mark.slow
def test_a_checkpoint_of_the_earlier_layout_resumes_at_its_size_and_refuses_a_resize(tmp_path: Path) -> None:
    settings = {"train__max_steps": 10, "checkpoint__every_steps": 5, "train__zero_stage": 1}
    overrides = run_overrides(tmp_path, **settings)
    made = run([sys.executable, "-c", LEGACY_CHECKPOINT, str(TINY_CONFIG), *overrides])
    assert made.returncode == 0, made.stderr[-3000:]
    assert "zero_pp_rank_0_mp_rank_00_optim_states.pt" in json.loads(
        (tmp_path / "checkpoints" / "step_000003" / "manifest.json").read_text())["files"]  # fmt: skip

    # 2 ranks: ZeRO's partitions of 1 rank cannot be split; refused by the launcher before any worker
    env = trainer_env(PET_NNODES="1", PET_NPROC_PER_NODE="2", PET_NODE_RANK="0", PET_MASTER_ADDR="127.0.0.1")
    refused = subprocess.run(trainer_command("launch", TINY_CONFIG, overrides), cwd=REPO, env=env,
                             capture_output=True, text=True, timeout=240)  # fmt: skip
    assert_clean_failure(refused, "checkpoint.dir: ", "step_000003", "ZeRO stage 1 on 1 rank(s)",
                         "cannot resume on 2 rank(s) running ZeRO stage 1", "use a new checkpoint.dir")  # fmt: skip
    # a ZeRO stage change, on the same rank count: refused the same way (by the trainer itself, before the
    # engine is built: one rank would run ZeRO 0 for train.zero_stage=2)
    stage_change = run(trainer_command("train", TINY_CONFIG, [*overrides, "--set", "train.zero_stage=2"]))
    assert_clean_failure(stage_change, "cannot resume on 1 rank(s) running ZeRO stage 0",
                         "run once more on 1 rank(s) with train.zero_stage=1")  # fmt: skip

    # the same size and stage: DeepSpeed's loader, with one rank running ZeRO 1 this once
    resumed = run(trainer_command("train", TINY_CONFIG, overrides))
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "note: train.zero_stage=1 runs as ZeRO stage 0" not in resumed.stderr
    newest = json.loads((tmp_path / "checkpoints" / "step_000010" / "manifest.json").read_text())
    assert newest["format"] == 2 and newest["zero_stage"] == 1  # from here on, resumable at any size
    # ... so the next run on one rank runs ZeRO 0 again
    more = run_overrides(tmp_path, **{**settings, "train__max_steps": 12})
    again = run(trainer_command("train", TINY_CONFIG, more))
    assert again.returncode == 0, again.stderr[-3000:]
    starts = [(m["resumed_from"], m["zero_stage"]) for m in metrics(tmp_path) if m["event"] == "start"]
    assert starts == [("step_000003", 1), ("step_000010", 0)]
