"""trainer.checkpoint.layout: names, the rules that verify a manifest's files, what is abandoned, what a save
supersedes, the layout this trainer does not read."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import pytest

from trainer.checkpoint.layout import abandoned, files_problem, shard_name, superseded, tag_for
from trainer.shared_files import sha256_of

from .conftest import (
    record,
)


def test_tags_sort_by_step() -> None:
    assert tag_for(100) == "step_000100" and sorted([tag_for(99), tag_for(100)]) == [
        "step_000099",
        "step_000100",
    ]
    assert shard_name(3) == "shard_00003.pt"


def test_sha256_reads_in_bounded_blocks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A shard of several GB is hashed a block at a time (hashlib.file_digest), never read whole into memory."""
    path = tmp_path / "shard"
    content = bytes(range(256)) * (5 * 4096 + 3)  # 5 MiB and a bit
    path.write_bytes(content)
    sizes: list[int] = []

    class Recorded:
        def __init__(self, handle: Any) -> None:
            self.handle = handle

        def readable(self) -> bool:
            return True

        def readinto(self, buffer: bytearray) -> int:
            sizes.append(len(buffer))
            return int(self.handle.readinto(buffer))

        def __enter__(self) -> Recorded:
            return self

        def __exit__(self, *exc: object) -> None:
            self.handle.close()

    def recorded_open(*args: Any, **kwargs: Any) -> Recorded:
        return Recorded(open(*args, **kwargs))  # Recorded closes it

    monkeypatch.setattr("trainer.shared_files.open", recorded_open, raising=False)
    assert sha256_of(path) == hashlib.sha256(content).hexdigest()
    assert len(sizes) > 5 and max(sizes) <= 1 << 20, sizes


def test_a_save_supersedes_all_but_keep_last_checkpoints_up_to_its_own() -> None:
    listing = [(40, "d"), (30, "c"), (20, "b"), (10, "a")]  # newest first
    assert superseded(listing, 30, keep_last=1) == ["b", "a"]
    assert superseded(listing, 30, keep_last=2) == ["a"]
    assert superseded(listing, 30, keep_last=3) == []
    assert superseded(listing, 40, keep_last=2) == ["b", "a"]
    assert superseded(listing, 45, keep_last=1) == ["d", "c", "b", "a"]  # 45 itself not listed yet


def test_what_is_abandoned_in_a_checkpoint_directory() -> None:
    alive = {"b2"}
    asked: list[str] = []

    def is_alive(run: str) -> bool:
        asked.append(run)
        return run in alive

    names = {
        "step_000010.tmp-a1": True,  # a dead run's staging
        "step_000010.tmp-a1.old": True,  # ... a checkpoint it was deleting
        ".run-a1.lock": True,
        "step_000020.tmp-b2": False,  # a live run's
        ".run-b2.lock": False,
        "step_000030.tmp-c3": False,  # this run's
        ".run-c3.lock": False,
        "step_000040.tmp": True,  # the trainer before run ids
        "step_000050": False,  # published
        "step_000060.tmp-zz": False,  # not a run id (hex): not the trainer's
        "notes.txt": False,
    }
    for name, expected in names.items():
        assert abandoned(name, "c3", is_alive) is expected, name
    assert sorted(set(asked)) == ["a1", "b2"]  # never asked about this run, published or foreign names


def test_a_manifests_files_are_checked_by_size_then_checksum() -> None:
    """The one rule of every Storage's verify and staged_problem: the first file missing, of another size, or
    (when asked) of another sha256; an empty file is there, not missing."""
    files = {"empty.pt": record(b""), "model.pt": record(b"weights"), "rng.pt": record(b"rng")}
    sizes = {"empty.pt": 0, "model.pt": 7, "rng.pt": 3}
    assert files_problem(files, sizes.get, None) is None
    assert files_problem(files, {**sizes, "rng.pt": None}.get, None) == "rng.pt is missing"
    assert files_problem(files, {"empty.pt": 0}.get, None) == "model.pt is missing"  # the first, in order
    assert (
        files_problem(files, {**sizes, "model.pt": 8}.get, None)
        == "model.pt has 8 bytes, the manifest says 7"
    )
    hashed: list[str] = []

    def sha256(name: str) -> str:
        hashed.append(name)
        return hashlib.sha256(
            b"rng!" if name == "rng.pt" else {"empty.pt": b"", "model.pt": b"weights"}[name]
        ).hexdigest()

    assert files_problem(files, sizes.get, sha256) == "rng.pt does not match its checksum"
    assert hashed == ["empty.pt", "model.pt", "rng.pt"]
    hashed.clear()
    assert (
        files_problem(files, {**sizes, "model.pt": 1}.get, sha256)
        == "model.pt has 1 bytes, the manifest says 7"
    )
    assert hashed == ["empty.pt"]  # a file of the wrong size is not hashed
