"""The checkpoint layout, its manifest and the rules that verify it, for every Storage (no torch).

step_000100/                 a published checkpoint
    shard_00000.pt           rank 0's share of the parameters by name (fp32 weight, AdamW exp_avg and
                             exp_avg_sq, whole), its RNG state and the run state; shard_00001.pt rank 1's ...
    manifest.json            written last: format, step, world size, ZeRO stage, model, each file's size
                             and sha256
step_000150.tmp-<run>/       being written by run <run> (or abandoned by a crash): never read
.run-<run>.lock              locked by rank 0 of run <run> while it lives
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from trainer.shared_files import LockState

FORMAT = 2  # manifest "format"; absent: DeepSpeed's per-rank layout of an earlier trainer, not read
MANIFEST = "manifest.json"
TAG_PATTERN = re.compile(r"^step_(\d+)$")
# Unpublished: step_N.tmp-<run> (staging), step_N.tmp-<run>.old (being deleted), step_N.tmp (before run ids).
UNPUBLISHED_PATTERN = re.compile(r"^step_\d+\.tmp(?:-(?P<run>[0-9a-f]+)(?:\.old)?)?$")
RUN_LOCK_PATTERN = re.compile(r"^\.run-(?P<run>[0-9a-f]+)\.lock$")


class CheckpointError(RuntimeError):
    """A checkpoint could not be written or published (the previous ones are untouched)."""


def tag_for(step: int) -> str:
    return f"step_{step:06d}"


def shard_name(rank: int) -> str:
    return f"shard_{rank:05d}.pt"


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def file_record(path: Path) -> dict[str, Any]:
    """A manifest entry: the file's size in bytes and its sha256."""
    return {"bytes": path.stat().st_size, "sha256": sha256_of(path)}


def unsupported(manifest: dict[str, Any]) -> str | None:
    """Where a manifest's layout is one this trainer does not read: what it is and the way out; else None."""
    if manifest.get("format") is not None:
        return None
    return (
        "in DeepSpeed's per-rank layout of an earlier trainer, which this trainer no longer reads; finish that "
        "run with the trainer that wrote it, or use a new checkpoint.dir"
    )


def files_problem(
    files: dict[str, Any], size_of: Callable[[str], int | None], sha256: Callable[[str], str] | None
) -> str | None:
    """Why the files a manifest lists do not match it, or None: the first file that is missing (size_of
    None), of another size in bytes, or (with sha256) of another sha256. The one rule for every Storage."""
    for name, expected in files.items():
        size = size_of(name)
        if size is None:
            return f"{name} is missing"
        if size != expected["bytes"]:
            return f"{name} has {size} bytes, the manifest says {expected['bytes']}"
        if sha256 is not None and sha256(name) != expected["sha256"]:
            return f"{name} does not match its checksum"
    return None


def run_gone(run: str | None, own_run: str, alive: Callable[[str], bool]) -> bool:
    """Whether what run `run` left is another run's that is not alive (`alive(run)`, asked only about other
    runs); None (a name of the trainer before run ids) always is. A directory's run holds its lock while it
    lives, an object store's renews its lease."""
    return run != own_run and (run is None or not alive(run))


def abandoned(name: str, own_run: str, alive: Callable[[str], bool]) -> bool:
    """Whether the entry `name` of checkpoint.dir is an unpublished directory or a run lock of a run that is
    gone (run_gone). Published checkpoints and other names never are. An object store asks it about the
    staging name whose files an object is."""
    match = UNPUBLISHED_PATTERN.match(name) or RUN_LOCK_PATTERN.match(name)
    if match is None:
        return False
    return run_gone(match.group("run"), own_run, alive)


def superseded(published: list[tuple[int, str]], step: int, keep_last: int) -> list[str]:
    """The tags to delete once checkpoint `step` is published: all but the keep_last - 1 newest of those older
    than it (newer ones, another run's, are not this save's to judge). published: (step, tag), newest first."""
    older = [tag for saved, tag in published if saved < step]
    return older[keep_last - 1 :]


class RunLock(Protocol):
    """Held by rank 0 of a run while it lives: another run then leaves its unpublished files alone."""

    def acquire(self) -> LockState: ...

    def release(self, remove: bool = False) -> None: ...


class Storage(Protocol):
    """What CheckpointStore does to checkpoint.dir. Tags are `step_N`, staging names `step_N.tmp-<run>`.
    Every backend promises: `publish` makes a checkpoint appear whole or not at all and never over a complete
    one (False if the tag is there); a checkpoint is trusted only while `verify` matches its files to its
    manifest ((manifest, None), else (None, why)); `remove` never leaves a half-deleted checkpoint that looks
    published, and a name already gone is fine. `published` is newest first; `manifest` is unverified (None
    if unreadable); `staged_problem` checks sizes only; `read_shard` loads weights only, on the CPU."""

    def describe(self, name: str) -> str: ...  # where a tag or staging name lives, for messages

    def published(self) -> list[tuple[int, str]]: ...

    def published_at(self, tag: str) -> float: ...  # seconds since the epoch; OSError if it is gone

    def manifest(self, tag: str) -> dict[str, Any] | None: ...

    def verify(self, tag: str) -> tuple[dict[str, Any] | None, str | None]: ...

    def write_shard(self, staging: str, name: str, state: dict[str, Any]) -> dict[str, Any]: ...

    def read_shard(self, tag: str, name: str) -> dict[str, Any]: ...

    def staged_problem(self, staging: str, files: dict[str, Any]) -> str | None: ...

    def publish(self, staging: str, tag: str, manifest: dict[str, Any]) -> bool: ...

    def remove(self, name: str, run: str) -> None: ...

    def run_lock(self, run: str) -> RunLock: ...

    def remove_abandoned(
        self, own_run: str
    ) -> list[str]: ...  # removes dead runs' leftovers; other live runs
