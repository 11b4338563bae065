"""trainer.checkpoint.local: a directory's checkpoints, published by rename, removed without ever looking
published half-deleted, read weights-only and memory-mapped; dead runs' leftovers removed."""

from __future__ import annotations

import hashlib
import os
import pickle
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import torch

from trainer.checkpoint.layout import (
    file_record,
    tag_for,
)
from trainer.checkpoint.local import LocalStorage, read_manifest

from ..conftest import (
    REPO,
    trainer_env,
)
from .conftest import (
    LocalBackend,
    publish_step,
    record,
    staged_directory,
)


def test_local_manifest_is_read_from_the_directory(tmp_path: Path) -> None:
    publish_step(LocalBackend(tmp_path), 7, "aa")
    (tmp_path / tag_for(7) / "model.pt").write_bytes(b"weighs!")
    assert read_manifest(tmp_path / tag_for(7)) == (None, "model.pt does not match its checksum")
    assert file_record(tmp_path / tag_for(7) / "sub" / "rng.pt") == record(b"rng")


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

    monkeypatch.setattr("trainer.checkpoint.local.shutil.rmtree", observe)
    storage.remove("step_000010", "cc")
    assert "step_000010.tmp-cc.old" in deleted
    assert sorted(p.name for p in tmp_path.iterdir()) == ["step_000020"]
    storage.remove("step_000010", "cc")  # already gone: nothing to do


def test_removing_a_staging_directory_deletes_it_in_place(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A crash in the middle of any removal leaves only names that remove_abandoned deletes later."""
    storage = LocalStorage(str(tmp_path))
    staged_directory(storage, "step_000010.tmp-aa", b"w")
    deleted: list[str] = []
    real_rmtree = shutil.rmtree

    def observe(path: Any, *args: Any, **kwargs: Any) -> None:
        deleted.append(Path(str(path)).name)
        real_rmtree(path, *args, **kwargs)

    monkeypatch.setattr("trainer.checkpoint.local.shutil.rmtree", observe)
    storage.remove("step_000010.tmp-aa", "cc")
    assert deleted == ["step_000010.tmp-aa"] and list(tmp_path.iterdir()) == []
    storage.remove("step_000010.tmp-aa", "cc")  # gone already: nothing to do, no error
    storage.remove("step_000020", "cc")


def test_a_half_deleted_checkpoint_left_by_a_crash_does_not_block_deleting_it_again(tmp_path: Path) -> None:
    storage = LocalStorage(str(tmp_path))
    for name in ("step_000010", "step_000010.tmp-cc.old"):  # a crash after the rename, in the rmtree
        staged_directory(storage, name, b"w")
    storage.remove("step_000010", "cc")
    assert list(tmp_path.iterdir()) == []


def test_published_lists_checkpoint_directories_only_newest_first(tmp_path: Path) -> None:
    storage = LocalStorage(str(tmp_path / "not yet"))
    assert storage.published() == []
    storage = LocalStorage(str(tmp_path))
    for name in ("step_000009", "step_000100", "step_000010.tmp-aa", "step_x", "steps_000011"):
        (tmp_path / name).mkdir()
    (tmp_path / "step_000200").write_text("a file, not a checkpoint")
    assert storage.published() == [(100, "step_000100"), (9, "step_000009")]
    assert storage.describe("step_000100") == str(tmp_path / "step_000100")
    assert storage.published_at("step_000100") == (tmp_path / "step_000100").stat().st_mtime
    with pytest.raises(FileNotFoundError):
        storage.published_at("step_000300")


def test_an_unverified_manifest_is_a_json_object_or_nothing(tmp_path: Path) -> None:
    storage = LocalStorage(str(tmp_path))
    assert storage.manifest("step_000001") is None  # no such checkpoint
    for step, text in ((2, '{"step": 2, "files": {}}'), (3, "[1, 2]"), (4, "{cut")):
        (tmp_path / tag_for(step)).mkdir()
        (tmp_path / tag_for(step) / "manifest.json").write_text(text)
    assert storage.manifest("step_000002") == {"step": 2, "files": {}}
    assert storage.manifest("step_000003") is None and storage.manifest("step_000004") is None


def test_shards_are_read_weights_only_and_memory_mapped(tmp_path: Path) -> None:
    storage = LocalStorage(str(tmp_path))
    (tmp_path / "step_000001").mkdir()
    torch.save({"params": {"w": torch.arange(20000.0)}}, tmp_path / "step_000001" / "shard_00000.pt")
    torch.save({"args": SimpleNamespace(lr=1)}, tmp_path / "step_000001" / "pickled.pt")
    shard = storage.read_shard("step_000001", "shard_00000.pt")
    assert torch.equal(shard["params"]["w"], torch.arange(20000.0))
    # mapped, not read: the file is in this process's memory map while the tensor lives
    assert str(tmp_path / "step_000001" / "shard_00000.pt") in Path("/proc/self/maps").read_text()
    with pytest.raises(pickle.UnpicklingError, match="Weights only load failed"):
        storage.read_shard("step_000001", "pickled.pt")  # a shard holds tensors only: no code runs


def test_shards_stay_weights_only_where_the_environment_turns_torchs_default_off(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD (set for some other program's old files) changes torch.load's
    default, not an explicit weights_only=True: a planted pickle still runs no code."""
    monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
    storage = LocalStorage(str(tmp_path))
    (tmp_path / "step_000001").mkdir()
    torch.save({"args": SimpleNamespace(lr=1)}, tmp_path / "step_000001" / "shard_00000.pt")
    with pytest.raises(pickle.UnpicklingError, match="Weights only load failed"):
        storage.read_shard("step_000001", "shard_00000.pt")


def cuda_tagged_save(value: Any, path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """torch.save as on a GPU: every tensor's storage tagged cuda:0 (what DeepSpeed's own files hold)."""
    with monkeypatch.context() as patched:
        patched.setattr(torch.serialization, "location_tag", lambda storage: "cuda:0")
        torch.save(value, path)


@pytest.mark.skipif(torch.cuda.is_available(), reason="shows a GPU-written file read where there is no GPU")
def test_a_shard_with_gpu_tensors_loads_on_cpu(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A shard whose tensors were saved from a GPU (a rank's state as it was on its device) resumes on a
    machine without one: tensors are loaded to host memory."""
    storage = LocalStorage(str(tmp_path))
    (tmp_path / "step_000002").mkdir()
    cuda_tagged_save(
        {"params": {"w": torch.arange(6.0)}}, tmp_path / "step_000002" / "shard_00000.pt", monkeypatch
    )
    weight = storage.read_shard("step_000002", "shard_00000.pt")["params"]["w"]
    assert weight.device.type == "cpu" and torch.equal(weight, torch.arange(6.0))


def test_a_shard_is_written_durably_into_a_new_staging_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    storage = LocalStorage(str(tmp_path / "checkpoints"))
    synced: list[int] = []
    real_fsync = os.fsync

    def fsync(descriptor: int) -> None:
        synced.append(descriptor)
        real_fsync(descriptor)

    monkeypatch.setattr("trainer.checkpoint.local.os.fsync", fsync)
    record = storage.write_shard("step_000005.tmp-aa", "shard_00001.pt", {"params": {"w": torch.ones(3)}})
    path = tmp_path / "checkpoints" / "step_000005.tmp-aa" / "shard_00001.pt"
    assert record == {"bytes": path.stat().st_size, "sha256": hashlib.sha256(path.read_bytes()).hexdigest()}
    assert torch.equal(torch.load(path, weights_only=True)["params"]["w"], torch.ones(3))
    assert len(synced) == 1
    storage.write_shard("step_000005.tmp-aa", "shard_00000.pt", {})  # the directory exists already
    assert storage.staged_problem("step_000005.tmp-aa", {"shard_00001.pt": record}) is None
    record["sha256"] = "0" * 64
    assert storage.staged_problem("step_000005.tmp-aa", {"shard_00001.pt": record}) is None  # sizes only
    assert (
        storage.staged_problem("step_000005.tmp-aa", {"shard_00002.pt": record})
        == "shard_00002.pt is missing"
    )


class FakeLock:
    """A run's lock as remove_abandoned probes it: acquire answers `state`."""

    def __init__(self, state: str, calls: list[tuple[str, Any]]) -> None:
        self.state, self.calls = state, calls

    def acquire(self) -> str:
        self.calls.append(("acquire", self.state))
        return self.state

    def release(self, remove: bool = False) -> None:
        self.calls.append(("release", remove))


def test_removing_abandoned_entries_probes_each_run_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Held (its run is dead: the probe's lock file is removed), busy (alive), unsupported (NFS without locks:
    dead, the file stays as it was found)."""
    storage = LocalStorage(str(tmp_path / "absent"))
    assert storage.remove_abandoned("c3") == []
    storage = LocalStorage(str(tmp_path))
    states = {"a1": "held", "b2": "busy", "d4": "unsupported"}
    calls: dict[str, list[tuple[str, Any]]] = {run: [] for run in states}
    monkeypatch.setattr(storage, "run_lock", lambda run: FakeLock(states[run], calls[run]))
    for name in ("step_000010.tmp-a1", "step_000020.tmp-b2", "step_000021.tmp-b2.old", "step_000030.tmp-c3",
                 "step_000040.tmp", "step_000050", "step_000060.tmp-d4"):  # fmt: skip
        (tmp_path / name / "sub").mkdir(parents=True)
    for name in (".run-a1.lock", ".run-b2.lock", ".run-c3.lock", ".run-d4.lock", "notes.txt"):
        (tmp_path / name).touch()
    assert storage.remove_abandoned("c3") == ["b2"]
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        ".run-b2.lock", ".run-c3.lock", "notes.txt", "step_000020.tmp-b2", "step_000021.tmp-b2.old",
        "step_000030.tmp-c3", "step_000050",
    ]  # fmt: skip
    assert calls == {
        "a1": [("acquire", "held"), ("release", True)],
        "b2": [("acquire", "busy"), ("release", False)],
        "d4": [("acquire", "unsupported"), ("release", False)],
    }


def test_leftovers_another_run_removes_at_the_same_time_are_no_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two runs starting together both clean up a dead run's staging: whichever deletes a directory first,
    the other carries on."""
    storage = LocalStorage(str(tmp_path))
    for name in ("step_000010.tmp", "step_000020.tmp"):
        (tmp_path / name / "sub").mkdir(parents=True)
        (tmp_path / name / "sub" / "shard_00000.pt").write_bytes(b"w")
    real_rmtree = shutil.rmtree

    def raced(path: Any, *args: Any, **kwargs: Any) -> None:
        real_rmtree(path)  # the other run got there first
        real_rmtree(path, *args, **kwargs)

    monkeypatch.setattr("trainer.checkpoint.local.shutil.rmtree", raced)
    assert storage.remove_abandoned("c3") == []
    assert list(tmp_path.iterdir()) == []


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
