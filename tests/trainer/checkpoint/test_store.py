"""trainer.checkpoint.store, fast: one process as rank 0 or another rank, fake collectives and engine
state: background writes, the ranks' agreement, publishing, replacing, loading."""

from __future__ import annotations

import re
import threading
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import torch

from trainer.checkpoint.layout import (
    CheckpointError,
    file_record,
    tag_for,
)
from trainer.checkpoint.local import LocalStorage, read_manifest

from .conftest import (
    WRITER_GROUP,
    FakeEngine,
    Harness,
    staged_directory,
)


def test_a_store_takes_its_run_id_from_rank_0_and_writes_over_its_own_gloo_group(make_store: Any) -> None:
    main = make_store()
    assert re.fullmatch(r"[0-9a-f]{12}", main.store.run)
    assert main.world.groups == [{"backend": "gloo"}] and main.store.group == WRITER_GROUP
    assert main.store.lock is not None and main.store.lock.descriptor is not None  # held while the run lives
    assert main.store.lock.path == main.root / f".run-{main.store.run}.lock" and main.store.lock.path.exists()
    assert main.store.storage.root == main.root and main.store.keep_last == 3
    assert (main.store.owners, main.store.in_flight, main.store.finished) == (None, None, [])
    other = make_store(rank=1, world_size=2, from_main=["0123456789ab"])
    assert other.store.run == "0123456789ab" and other.store.lock is None
    assert not (other.root / ".run-0123456789ab.lock").exists()
    assert make_store().store.run != main.store.run


def test_a_store_uses_the_storage_it_is_given(make_store: Any, tmp_path: Path) -> None:
    storage = LocalStorage(str(tmp_path / "elsewhere"))
    harness = make_store(storage=storage)
    assert harness.store.storage is storage
    assert (tmp_path / "elsewhere" / f".run-{harness.store.run}.lock").exists()


def test_a_save_publishes_a_complete_checkpoint_in_the_background(make_store: Any) -> None:
    harness = make_store()
    store, root, engine = harness.store, harness.root, FakeEngine(stage=1)
    started = time.perf_counter()
    store.save(engine, 10, {"step": 10, "loss": 2.5}, {"model": {"n_layer": 2}})
    (write,) = store.wait()
    elapsed = time.perf_counter() - started
    tag = root / "step_000010"
    assert (write.step, write.tag, write.path, write.error) == (10, "step_000010", str(tag), None)
    assert write.staging == f"step_000010.tmp-{store.run}" and write.done.is_set()
    assert write.write_s is not None and 0 < write.write_s <= elapsed  # durations, within the test's own
    assert 0 <= write.waited_s <= write.blocked_s <= elapsed
    assert harness.state.run_states_of == [engine]  # the run state of the engine being saved
    manifest, problem = read_manifest(tag)
    assert problem is None and manifest == {
        "model": {"n_layer": 2}, "zero_stage": 1, "format": 2, "step": 10, "world_size": 1,
        "shards": ["shard_00000.pt"], "files": {"shard_00000.pt": file_record(tag / "shard_00000.pt")},
    }  # fmt: skip
    shard = torch.load(tag / "shard_00000.pt", weights_only=True)
    assert sorted(shard["params"]) == ["0.bias", "0.weight", "1.bias", "1.weight"]
    assert shard["run"] == {"step": 10, "client_state": {"step": 10, "loss": 2.5}}
    (snapshot_call,) = harness.state.snapshots
    assert snapshot_call[0] is engine and snapshot_call[2] == 0 and snapshot_call[3] is store.buffers
    assert snapshot_call[1] == store.owners == dict.fromkeys(["0.weight", "0.bias", "1.weight", "1.bias"], 0)
    assert sorted(p.name for p in root.iterdir()) == [f".run-{store.run}.lock", "step_000010"]
    assert store.poll() == [] and store.wait() == []


def test_saves_keep_the_newest_keep_last_checkpoints(make_store: Any) -> None:
    harness = make_store(keep_last=2)
    for step in (10, 20, 30):
        harness.store.save(FakeEngine(), step, {"step": step}, {})
    assert [w.step for w in harness.store.wait()] == [10, 20, 30]
    assert harness.store.storage.published() == [(30, "step_000030"), (20, "step_000020")]
    assert sorted(p.name for p in harness.root.glob("step_*")) == ["step_000020", "step_000030"]


def shard_of_rank_1(harness: Harness, step: int) -> tuple[dict[str, Any], None]:
    """What rank 1's writer reports after writing its shard into this run's staging directory."""
    staging = harness.root / f"{tag_for(step)}.tmp-{harness.store.run}"
    staging.mkdir(parents=True, exist_ok=True)
    torch.save({"params": {}, "rng": {"torch": torch.tensor([101])}}, staging / "shard_00001.pt")
    return {"shard_00001.pt": file_record(staging / "shard_00001.pt")}, None


def test_rank_0_publishes_every_ranks_shard(make_store: Any) -> None:
    harness = make_store(world_size=2)
    harness.world.peers = [shard_of_rank_1(harness, 10)]
    harness.store.save(FakeEngine(), 10, {"step": 10}, {})
    (write,) = harness.store.wait()
    tag = harness.root / "step_000010"
    manifest, problem = read_manifest(tag)
    assert problem is None and manifest is not None and write.path == str(tag)
    assert (manifest["world_size"], manifest["shards"]) == (2, ["shard_00000.pt", "shard_00001.pt"])
    assert sorted(manifest["files"]) == ["shard_00000.pt", "shard_00001.pt"]
    assert harness.world.sent == [(str(tag), None)]  # the outcome, to every rank's writer
    # parameters split by bytes between the two ranks: each rank writes only its own
    owners = harness.store.owners
    assert owners == {"0.weight": 0, "0.bias": 1, "1.weight": 1, "1.bias": 1}
    assert list(torch.load(tag / "shard_00000.pt", weights_only=True)["params"]) == ["0.weight"]


def test_a_rank_other_than_0_writes_its_shard_and_learns_the_outcome(make_store: Any) -> None:
    harness = make_store(rank=1, world_size=2, from_main=["00000000000b"])
    harness.world.from_main.append(("/checkpoints/step_000010", None))
    harness.store.save(FakeEngine(), 10, {"step": 10}, {})
    (write,) = harness.store.wait()
    assert (write.path, write.error) == ("/checkpoints/step_000010", None)
    staging = harness.root / "step_000010.tmp-00000000000b"
    assert harness.world.sent == [({"shard_00001.pt": file_record(staging / "shard_00001.pt")}, None)]
    assert harness.state.snapshots[0][2] == 1 and harness.state.snapshots[0][4] is None  # no run state
    assert harness.store.storage.published() == []  # only rank 0 publishes
    harness.world.from_main.append((None, "rank 0: OSError: disk full"))
    harness.store.save(FakeEngine(), 20, {"step": 20}, {})
    with pytest.raises(CheckpointError, match=r"step_000020 not published: rank 0: OSError: disk full$"):
        harness.store.wait()


def test_a_rank_that_fails_to_write_stops_the_publication(make_store: Any) -> None:
    harness = make_store(world_size=3)
    harness.world.peers = [(None, "rank 1: OSError: disk full"), (None, "rank 2: OSError: quota")]
    harness.store.save(FakeEngine(), 10, {"step": 10}, {})
    with pytest.raises(CheckpointError) as failed:
        harness.store.wait()
    assert str(failed.value) == (
        f"checkpoint {harness.root / 'step_000010'} not published: rank 1: OSError: disk full; "
        "rank 2: OSError: quota"
    )
    assert harness.store.storage.published() == []
    assert harness.world.sent == [(None, "rank 1: OSError: disk full; rank 2: OSError: quota")]


def test_this_ranks_failed_write_is_reported_not_raised_in_the_writer(
    make_store: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    harness = make_store()

    def full(staging: str, name: str, state: dict[str, Any]) -> dict[str, Any]:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(harness.store.storage, "write_shard", full)
    harness.store.save(FakeEngine(), 10, {"step": 10}, {})
    with pytest.raises(
        CheckpointError, match=r"not published: rank 0: OSError: \[Errno 28\] No space left on device$"
    ):
        harness.store.wait()
    (write,) = harness.store.wait()  # raised once; then handed on like any finished write
    assert (write.path, write.error) == (None, "rank 0: OSError: [Errno 28] No space left on device")
    assert harness.store.wait() == []


def test_a_staging_directory_removed_meanwhile_is_not_published(make_store: Any) -> None:
    """Another run took this one for dead and removed its staging: rank 1's shard is gone."""
    harness = make_store(world_size=2)
    harness.world.peers = [shard_of_rank_1(harness, 10)]
    (harness.root / f"step_000010.tmp-{harness.store.run}" / "shard_00001.pt").unlink()
    harness.store.save(FakeEngine(), 10, {"step": 10}, {})
    with pytest.raises(CheckpointError) as failed:
        harness.store.wait()
    staging = harness.root / f"step_000010.tmp-{harness.store.run}"
    assert str(failed.value).endswith(f"not published: {staging}: shard_00001.pt is missing")
    assert harness.store.storage.published() == []


def test_errors_while_publishing_or_agreeing_fail_the_write(
    make_store: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    harness = make_store()

    def unwritable(staging: str, tag: str, manifest: dict[str, Any]) -> bool:
        raise PermissionError("read-only file system")

    monkeypatch.setattr(harness.store.storage, "publish", unwritable)
    harness.store.save(FakeEngine(), 10, {"step": 10}, {})
    with pytest.raises(CheckpointError, match=r"not published: PermissionError: read-only file system$"):
        harness.store.wait()
    harness.world.broken = RuntimeError("connection reset by peer")
    harness.store.save(FakeEngine(), 20, {"step": 20}, {})
    with pytest.raises(
        CheckpointError, match=r"step_000020 not published: RuntimeError: connection reset by peer$"
    ):
        harness.store.wait()


@pytest.mark.parametrize(
    ("damage", "kept", "warning"),
    [
        (None, True, "warning: {tag} was already published by another run; keeping it\n"),  # complete: stays
        (
            b"THE OTHER RUN'S",
            False,
            "warning: replacing {tag}: model.pt does not match its checksum\n",
        ),  # replaced
    ],
)
def test_a_checkpoint_of_the_same_step_another_run_published_stays_only_if_complete(
    make_store: Any, capsys: pytest.CaptureFixture[str], damage: bytes | None, kept: bool, warning: str
) -> None:
    harness = make_store()
    storage = harness.store.storage
    files = staged_directory(storage, "step_000010.tmp-aa", b"the other run's")
    assert storage.publish("step_000010.tmp-aa", "step_000010", {"format": 2, "step": 10, "files": files})
    tag = harness.root / "step_000010"
    if damage is not None:
        (tag / "model.pt").write_bytes(damage)
    harness.store.save(FakeEngine(), 10, {"step": 10}, {})
    (write,) = harness.store.wait()
    assert (write.path, write.error) == (str(tag), None)
    assert (tag / "model.pt").exists() is kept and (tag / "shard_00000.pt").exists() is not kept
    assert read_manifest(tag)[0] is not None
    assert sorted(p.name for p in harness.root.glob("step_*")) == ["step_000010"]  # the staging removed
    assert warning.format(tag=tag) in capsys.readouterr().err


def test_a_replacement_that_loses_a_race_is_not_published(
    make_store: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    harness = make_store()
    storage = harness.store.storage
    removed: list[tuple[str, str]] = []
    monkeypatch.setattr(storage, "publish", lambda staging, tag, manifest: False)  # always taken
    monkeypatch.setattr(storage, "verify", lambda tag: (None, "model.pt is missing"))
    monkeypatch.setattr(storage, "remove", lambda name, run: removed.append((name, run)))
    harness.store.save(FakeEngine(), 10, {"step": 10}, {})
    with pytest.raises(CheckpointError) as failed:
        harness.store.wait()
    tag = harness.root / "step_000010"
    assert (
        str(failed.value) == f"checkpoint {tag} not published: {tag} was published by another run meanwhile"
    )
    run = harness.store.run
    assert removed == [("step_000010", run), (f"step_000010.tmp-{run}", run)]


def test_an_old_checkpoint_whose_deletion_a_crash_cut_short_is_removed_by_the_next_run(
    make_store: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    harness = make_store(keep_last=1)
    harness.store.save(FakeEngine(), 10, {"step": 10}, {})
    harness.store.wait()
    with monkeypatch.context() as patched:
        # dies in rmtree
        patched.setattr("trainer.checkpoint.local.shutil.rmtree", lambda *args, **kwargs: None)
        harness.store.save(FakeEngine(), 20, {"step": 20}, {})
        harness.store.wait()
    assert harness.store.storage.published() == [(20, "step_000020")]  # step 10 is out of the pattern
    harness.store.close(wait=True)  # the run is gone: its lock is free
    assert LocalStorage(str(harness.root)).remove_abandoned("0000000000aa") == []
    assert sorted(p.name for p in harness.root.iterdir()) == ["step_000020"]


def test_the_step_loop_waits_only_for_the_snapshot_and_a_previous_write(
    make_store: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    harness = make_store()
    store = harness.store
    slow = threading.Event()
    real_write_shard = store.storage.write_shard

    def slow_write_shard(staging: str, name: str, state: dict[str, Any]) -> dict[str, Any]:
        if staging.startswith("step_000010"):
            assert slow.wait(10)
        return real_write_shard(staging, name, state)

    monkeypatch.setattr(store.storage, "write_shard", slow_write_shard)
    store.save(FakeEngine(), 10, {"step": 10}, {})
    assert store.poll() == [] and store.in_flight is not None and not store.in_flight.done.is_set()
    (writer,) = [t for t in threading.enumerate() if t.name == "checkpoint-writer"]
    assert writer.daemon  # a write abandoned by a failing run never keeps the process alive
    threading.Timer(0.3, slow.set).start()
    store.save(FakeEngine(), 20, {"step": 20}, {})  # waits for step 10's write first
    first, second = store.wait()
    assert (first.step, second.step) == (10, 20) and first.write_s is not None and first.write_s >= 0.3
    assert second.waited_s >= 0.25 and second.blocked_s >= second.waited_s
    assert first.waited_s < 0.25


def test_a_failed_write_is_raised_by_the_next_save_before_its_snapshot(make_store: Any) -> None:
    harness = make_store(world_size=2)
    harness.world.peers = [(None, "rank 1: OSError: disk full")]
    harness.store.save(FakeEngine(), 10, {"step": 10}, {})
    assert harness.store.in_flight is not None and harness.store.in_flight.done.wait(10)
    with pytest.raises(CheckpointError, match="rank 1: OSError: disk full"):
        harness.store.poll()
    harness.store.save(FakeEngine(), 20, {"step": 20}, {})
    assert harness.store.in_flight is not None and harness.store.in_flight.done.wait(10)
    with pytest.raises(CheckpointError, match=r"step_000020 not published"):
        harness.store.save(FakeEngine(), 30, {"step": 30}, {})
    assert [call[4]["step"] for call in harness.state.snapshots] == [10, 20]


def test_closing_waits_for_the_write_then_frees_the_run_lock(
    make_store: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    harness = make_store()
    store = harness.store
    lock = store.lock
    assert lock is not None
    blocked = threading.Event()
    real_write_shard = store.storage.write_shard
    monkeypatch.setattr(
        store.storage, "write_shard", lambda *args: blocked.wait(10) and real_write_shard(*args)
    )
    store.save(FakeEngine(), 10, {"step": 10}, {})
    store.close(wait=False)  # a failing run: the write is abandoned, the lock stays while it may still write
    assert lock.descriptor is not None and lock.path.exists()
    blocked.set()
    store.close(wait=True)
    assert lock.descriptor is None and not lock.path.exists()
    assert store.storage.published() == [(10, "step_000010")]
    make_store(rank=1, world_size=2, from_main=["00000000000b"]).store.close(wait=True)  # no lock: fine


def test_each_rank_prepares_host_buffers_for_the_parameters_it_writes_on_a_gpu(
    make_store: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """ZeRO 3 parameters are empty placeholders: their full shape is ds_shape."""
    prepared: list[dict[str, tuple[int, ...]]] = []
    cuda = SimpleNamespace(type="cuda")
    engine = SimpleNamespace(module=SimpleNamespace(named_parameters=lambda: [
        ("a", SimpleNamespace(shape=(0,), ds_shape=(10, 3), device=cuda)),
        ("b", SimpleNamespace(shape=(4, 5), device=cuda)),
        ("c", SimpleNamespace(shape=(2,), device=cuda)),
    ]))  # fmt: skip
    for rank, mine in ((0, {"a": (10, 3)}), (1, {"b": (4, 5), "c": (2,)})):
        harness = make_store(rank=rank, world_size=2, from_main=["00000000000b"])
        # the buffers snapshot copies into (test_a_save_publishes_a_complete_checkpoint_in_the_background)
        monkeypatch.setattr(harness.store.buffers, "prepare", prepared.append)
        harness.store.prepare(engine)
        assert harness.store.owners == {"a": 0, "b": 1, "c": 1}
        assert prepared.pop() == {
            f"{name}/{key}": shape
            for name, shape in mine.items()
            for key in ("weight", "exp_avg", "exp_avg_sq")
        }
    harness = make_store()
    monkeypatch.setattr(harness.store.buffers, "prepare", prepared.append)
    harness.store.prepare(FakeEngine())  # on CPU: no pinned buffers
    assert prepared == [] and harness.store.owners is not None
    single = SimpleNamespace(module=SimpleNamespace(named_parameters=lambda: [
        ("w", SimpleNamespace(shape=(3, 2), device=cuda)),
    ]))  # fmt: skip
    harness = make_store()
    monkeypatch.setattr(harness.store.buffers, "prepare", prepared.append)
    harness.store.prepare(single)  # a model of one parameter
    assert harness.store.owners == {"w": 0}
    assert prepared == [{"w/weight": (3, 2), "w/exp_avg": (3, 2), "w/exp_avg_sq": (3, 2)}]


def test_abandoned_staging_is_removed_by_rank_0_then_every_rank_waits(
    make_store: Any, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    calls: list[str] = []

    def others_alive(run: str) -> list[str]:
        calls.append(run)
        return ["b2", "d4"]

    main = make_store()
    monkeypatch.setattr(main.store.storage, "remove_abandoned", others_alive)
    main.store.remove_abandoned()
    assert calls == [main.store.run] and main.world.barriers == 1
    assert capsys.readouterr().err == (
        f"warning: checkpoint.dir {main.root} is also being written by another live run (b2, d4): both "
        "publish checkpoints there\n"
    )
    monkeypatch.setattr(main.store.storage, "remove_abandoned", lambda run: [])
    main.store.remove_abandoned()
    assert capsys.readouterr().err == "" and main.world.barriers == 2
    other = make_store(rank=1, world_size=2, from_main=["00000000000b"])
    monkeypatch.setattr(other.store.storage, "remove_abandoned", others_alive)
    other.store.remove_abandoned()
    assert calls == [main.store.run] and other.world.barriers == 1


def test_every_rank_resumes_from_rank_0s_choice(make_store: Any) -> None:
    main = make_store()
    assert main.store.newest_complete() is None
    main.store.save(FakeEngine(), 10, {"step": 10}, {})
    main.store.wait()
    found = main.store.newest_complete()
    assert found is not None and found[0] == "step_000010" and found[1]["step"] == 10
    other = make_store(rank=1, world_size=2, from_main=["00000000000b", ("step_000005", {"step": 5})])
    assert other.store.newest_complete() == ("step_000005", {"step": 5})  # rank 0's, not its own look


def test_only_rank_0_reads_the_checkpoints_to_choose(
    make_store: Any, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The choice hashes every file of the checkpoints it looks at: rank 0 alone does it (and warns)."""
    main = make_store()
    main.store.save(FakeEngine(), 10, {"step": 10}, {})
    main.store.wait()
    (main.root / "step_000010" / "shard_00000.pt").write_bytes(b"torn")
    other = make_store(rank=1, world_size=2, from_main=["00000000000b", None])
    hashed: list[Path] = []

    def sha256_of(path: Path) -> str:
        hashed.append(path)
        return "0" * 64

    monkeypatch.setattr("trainer.checkpoint.local.sha256_of", sha256_of)
    assert other.store.newest_complete() is None
    assert hashed == [] and capsys.readouterr().err == ""


def test_loading_restores_the_state_and_this_ranks_rng(
    make_store: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    harness = make_store(world_size=2)
    harness.world.peers = [shard_of_rank_1(harness, 10)]
    harness.store.save(FakeEngine(), 10, {"step": 10, "loss": 2.5}, {})
    harness.store.wait()
    found = harness.store.newest_complete()
    assert found is not None
    engine = FakeEngine()
    assert harness.store.load(engine, *found) == {"step": 10, "loss": 2.5}
    assert harness.state.restored_into == [engine]
    (shards,) = harness.state.restored
    assert [sorted(s["params"]) for s in shards] == [["0.weight"], []]
    assert harness.state.rng == [{"torch": torch.tensor([100])}]
    for rank, world_size, rng in ((1, 2, [{"torch": torch.tensor([101])}]), (2, 3, [])):
        harness.state.rng.clear()
        other = make_store(rank=rank, world_size=world_size, from_main=["00000000000b"])
        assert other.store.load(FakeEngine(), *found) == {"step": 10, "loss": 2.5}
        assert harness.state.rng == rng
    assert (
        capsys.readouterr().err == "warning: rank 2: step_000010 was written by 2 rank(s): RNG starts fresh\n"
    )


def test_only_rank_0_counts_the_published_checkpoints(
    make_store: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    main = make_store()
    for step in (10, 20):
        main.store.save(FakeEngine(), step, {"step": step}, {})
    main.store.wait()
    assert main.store.published_count() == 2
    other = make_store(rank=1, world_size=2, from_main=["00000000000b", 2])

    def not_on_this_rank() -> list[tuple[int, str]]:
        raise AssertionError("a rank other than 0 lists checkpoint.dir")

    monkeypatch.setattr(other.store.storage, "published", not_on_this_rank)
    assert other.store.published_count() == 2  # rank 0's count
