"""The layout every Storage verifies (no torch): step_N/ holds a shard per rank, manifest.json written last;
step_N.tmp-<run>/ is being written or abandoned, never read; a live run's rank 0 holds .run-<run>.lock."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from trainer.shared_files import LockState, sha256_of

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


def file_record(path: Path) -> dict[str, Any]:
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
    """The first listed file missing (size_of None), of another size or checksum (sha256), or None."""
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
    """Whether run `run`'s leftovers are another run's that is not alive; None (before run ids) always is."""
    return run != own_run and (run is None or not alive(run))


def abandoned(name: str, own_run: str, alive: Callable[[str], bool]) -> bool:
    """Whether checkpoint.dir's `name` is a gone run's staging or lock; a published checkpoint never is."""
    match = UNPUBLISHED_PATTERN.match(name) or RUN_LOCK_PATTERN.match(name)
    return match is not None and run_gone(match.group("run"), own_run, alive)


def superseded(published: list[tuple[int, str]], step: int, keep_last: int) -> list[str]:
    """All but the keep_last - 1 newest older than `step` (newer ones are another run's, not this save's)."""
    older = [tag for saved, tag in published if saved < step]
    return older[keep_last - 1 :]


class RunLock(Protocol):
    """Held by rank 0 of a run while it lives: another run then leaves its unpublished files alone."""

    def acquire(self) -> LockState: ...
    def release(self, remove: bool = False) -> None: ...


class Storage(Protocol):
    """Every backend: `publish` is whole or nothing, never over a complete checkpoint (False then); trusted
    only while `verify` matches its files; `remove` never leaves a half-deleted one looking published."""

    def describe(self, name: str) -> str: ...  # where a tag or staging name lives, for messages
    def published(self) -> list[tuple[int, str]]: ...  # newest first
    def published_at(self, tag: str) -> float: ...  # seconds since the epoch; OSError if it is gone
    def manifest(self, tag: str) -> dict[str, Any] | None: ...
    def verify(self, tag: str) -> tuple[dict[str, Any] | None, str | None]: ...
    def write_shard(self, staging: str, name: str, state: dict[str, Any]) -> dict[str, Any]: ...
    def read_shard(self, tag: str, name: str) -> dict[str, Any]: ...  # weights only, on the CPU
    def staged_problem(self, staging: str, files: dict[str, Any]) -> str | None: ...  # sizes only
    def publish(self, staging: str, tag: str, manifest: dict[str, Any]) -> bool: ...
    def remove(self, name: str, run: str) -> None: ...  # a name already gone is fine
    def run_lock(self, run: str) -> RunLock: ...
    def remove_abandoned(
        self, own_run: str
    ) -> list[str]: ...  # dead runs' leftovers; returns other live runs
