"""Where checkpoints live, without torch: their names and manifest, the rules that verify them, the Storage a
checkpoint.dir is, and the directory one (LocalStorage). `launch` checks checkpoint.dir with it before any
worker starts, so it imports no torch (a second full import on the recovery path): torch is imported only to
write or read a shard. trainer.checkpoint (the background writer, the earlier layout) builds on it.

Layout under checkpoint.dir:

    step_000100/                      a published checkpoint
        shard_00000.pt                rank 0's share of the parameters (by name: fp32 weight, AdamW exp_avg and
                                      exp_avg_sq, whole tensors), rank 0's RNG state, and the run state (step,
                                      optimizer step, LR schedule, DeepSpeed's step counters, client state)
        shard_00001.pt                rank 1's share of the parameters and its RNG state, ...
        manifest.json                 written last: format, step, world size, ZeRO stage, model, every file's
                                      size and sha256
    step_000150.tmp-<run>/            being written by run <run> (or abandoned by a crash): never read
    .run-<run>.lock                   locked by rank 0 of run <run> while it lives
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import re
import shutil
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from trainer.config import is_s3_url
from trainer.shared_files import HeldLock, LockState, fsync_directory

FORMAT = 2  # manifest "format"; absent: DeepSpeed's per-rank layout, written before this one
MANIFEST = "manifest.json"
TAG_PATTERN = re.compile(r"^step_(\d+)$")
# Unpublished directories: step_N.tmp-<run> (staging), step_N.tmp-<run>.old (being deleted), and step_N.tmp
# (the staging name of the trainer before run ids).
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


def read_manifest(directory: Path) -> tuple[dict[str, Any] | None, str | None]:
    """(manifest, None) if a published checkpoint's files match its manifest, else (None, the problem)."""
    try:
        manifest = json.loads((directory / MANIFEST).read_text(encoding="utf-8"))
        files = manifest["files"]
    except (OSError, ValueError, KeyError, TypeError) as error:
        return None, f"no readable {MANIFEST} ({type(error).__name__})"
    problem = _files_problem(directory, files, checksums=True)
    return (None, problem) if problem else (manifest, None)


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


def _files_problem(directory: Path, files: dict[str, Any], checksums: bool) -> str | None:
    def size_of(name: str) -> int | None:
        path = directory / name
        return path.stat().st_size if path.is_file() else None

    return files_problem(files, size_of, (lambda name: sha256_of(directory / name)) if checksums else None)


def warn(message: str) -> None:
    print(f"warning: {message}", file=sys.stderr, flush=True)


def run_gone(run: str | None, own_run: str, alive: Callable[[str], bool]) -> bool:
    """Whether what run `run` left is another run's that is not alive (`alive(run)`, asked only about other
    runs); None (a name of the trainer before run ids) always is. The rule of every Storage's
    remove_abandoned: a directory's run holds its lock while it lives, an object store's renews its lease."""
    return run != own_run and (run is None or not alive(run))


def abandoned(name: str, own_run: str, alive: Callable[[str], bool]) -> bool:
    """Whether the entry `name` of checkpoint.dir is left over by a run that is gone: an unpublished directory
    (UNPUBLISHED_PATTERN) or a run's lock file (RUN_LOCK_PATTERN) of a run other than own_run that is not
    alive (`alive(run)`, asked only for such names); an unpublished name without a run id (the trainer before
    run ids) always is. Published checkpoints and other names never are. An object store asks it about the
    staging name whose files an object is (S3Storage.remove_abandoned)."""
    match = UNPUBLISHED_PATTERN.match(name) or RUN_LOCK_PATTERN.match(name)
    if match is None:
        return False
    return run_gone(match.group("run"), own_run, alive)


class RunLock(Protocol):
    """Held by rank 0 of a run while it lives: another run then leaves its unpublished files alone."""

    def acquire(self) -> LockState: ...

    def release(self, remove: bool = False) -> None: ...


class Storage(Protocol):
    """What CheckpointStore does to checkpoint.dir, whatever holds it. Tags are `step_N`; staging names are
    `step_N.tmp-<run>` (a run's files of step N before they are published). Every backend keeps the same
    promises: `publish` makes a checkpoint appear whole or not at all and never over a complete one, a
    checkpoint is trusted only while `verify` matches its files to its manifest, and `remove` never leaves a
    half-deleted checkpoint that looks published."""

    def describe(self, name: str) -> str:
        """Where a tag or staging name lives, for messages and metrics."""
        ...

    def published(self) -> list[tuple[int, str]]:
        """(step, tag) of every published checkpoint, newest first."""
        ...

    def published_at(self, tag: str) -> float:
        """When a checkpoint was published, seconds since the epoch; OSError if it is gone."""
        ...

    def manifest(self, tag: str) -> dict[str, Any] | None:
        """A published checkpoint's manifest as written, unverified (None if unreadable)."""
        ...

    def verify(self, tag: str) -> tuple[dict[str, Any] | None, str | None]:
        """(manifest, None) if the checkpoint's files match its manifest (sizes and sha256), else (None, why)."""
        ...

    def write_shard(self, staging: str, name: str, state: dict[str, Any]) -> dict[str, Any]:
        """Write one file (torch.save of state) into a staging name, durably; its manifest record."""
        ...

    def read_shard(self, tag: str, name: str) -> dict[str, Any]:
        """One file of a published checkpoint, tensors on the CPU (weights only)."""
        ...

    def read_legacy(self, tag: str, name: str) -> Any:
        """A file of DeepSpeed's own layout (pickled DeepSpeed objects: not weights-only)."""
        ...

    def staged_problem(self, staging: str, files: dict[str, Any]) -> str | None:
        """Why a staging name does not hold the files its writers reported (sizes), or None."""
        ...

    def publish(self, staging: str, tag: str, manifest: dict[str, Any]) -> bool:
        """Publish the staged files with their manifest as the tag; False (nothing published) if a checkpoint
        of that tag is already there."""
        ...

    def remove(self, name: str, run: str) -> None:
        """Delete a published checkpoint or a staging name; a name already gone is fine."""
        ...

    def run_lock(self, run: str) -> RunLock:
        """The lock that says run `run` is alive."""
        ...

    def remove_abandoned(self, own_run: str) -> list[str]:
        """Delete what runs that are not alive left unpublished; the ids of other live runs."""
        ...


def open_storage(directory: str, check: bool = False) -> Storage:
    """The Storage of a checkpoint.dir: S3Storage for s3://bucket/prefix, else LocalStorage. check: for S3,
    make sure now that the endpoint answers and the credentials may list and write there (ConfigError, one
    line, if not); a directory needs no check (it is created on the first write)."""
    if is_s3_url(directory):
        from trainer.s3_storage import S3Storage  # boto3: only for an object store

        storage = S3Storage(directory)
        if check:
            storage.check()
        return storage
    return LocalStorage(directory)


class LocalStorage:
    """The checkpoint store's file operations on a POSIX directory (local disk, hostPath or NFS volume):
    staging directories, published by rename(2)."""

    def __init__(self, directory: str) -> None:
        self.root = Path(directory).expanduser()

    def describe(self, name: str) -> str:
        """Where a tag or staging name lives, for messages and metrics."""
        return str(self.root / name)

    def published(self) -> list[tuple[int, str]]:
        """(step, tag) of every published checkpoint, newest first."""
        if not self.root.is_dir():
            return []
        found = []
        for path in self.root.iterdir():
            match = TAG_PATTERN.match(path.name)
            if match and path.is_dir():
                found.append((int(match.group(1)), path.name))
        return sorted(found, reverse=True)

    def published_at(self, tag: str) -> float:
        """When a checkpoint was published (its directory's last change), seconds since the epoch; OSError if gone."""
        return os.stat(self.root / tag).st_mtime

    def manifest(self, tag: str) -> dict[str, Any] | None:
        """A published checkpoint's manifest as written, unverified (None if unreadable)."""
        try:
            manifest = json.loads((self.root / tag / MANIFEST).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        return manifest if isinstance(manifest, dict) else None

    def verify(self, tag: str) -> tuple[dict[str, Any] | None, str | None]:
        """(manifest, None) if the checkpoint's files match its manifest (sizes and sha256), else (None, why)."""
        return read_manifest(self.root / tag)

    def write_shard(self, staging: str, name: str, state: dict[str, Any]) -> dict[str, Any]:
        """Write one file into a staging directory (created if needed), durably; its manifest record."""
        directory = self.root / staging
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / name
        import torch  # only where a shard is written or read: never in `launch`

        torch.save(state, path)
        with open(path, "rb") as handle:
            os.fsync(handle.fileno())
        return file_record(path)

    def read_shard(self, tag: str, name: str) -> dict[str, Any]:
        """One file of a published checkpoint, memory-mapped: tensors are read as they are used."""
        import torch

        return torch.load(self.root / tag / name, map_location="cpu", mmap=True, weights_only=True)

    def read_legacy(self, tag: str, name: str) -> Any:
        """A file of DeepSpeed's own layout (pickled DeepSpeed objects: not weights-only), memory-mapped."""
        import torch

        return torch.load(self.root / tag / name, map_location="cpu", mmap=True, weights_only=False)

    def staged_problem(self, staging: str, files: dict[str, Any]) -> str | None:
        """Why a staging directory does not hold the files its writers reported (sizes), or None."""
        return _files_problem(self.root / staging, files, checksums=False)

    def publish(self, staging: str, tag: str, manifest: dict[str, Any]) -> bool:
        """Write the manifest into the staging directory and rename it to the tag; False (nothing renamed)
        if a checkpoint of that tag is already there: rename(2) never replaces a non-empty directory."""
        directory = self.root / staging
        with open(directory / MANIFEST, "w", encoding="utf-8") as handle:
            json.dump(manifest, handle, indent=1, sort_keys=True)
            handle.flush()
            os.fsync(handle.fileno())
        fsync_directory(directory)
        try:
            os.rename(directory, self.root / tag)
        except OSError as error:
            if error.errno in (errno.EEXIST, errno.ENOTEMPTY):
                return False
            raise
        fsync_directory(self.root)
        return True

    def remove(self, name: str, run: str) -> None:
        """Delete a published checkpoint (or a staging directory): renamed out of the step_N pattern first
        (atomic), so that a half-deleted one never looks published; a name already gone is fine."""
        aside = self.root / (name if ".tmp-" in name else f"{name}.tmp-{run}.old")
        if aside.name != name:
            shutil.rmtree(aside, ignore_errors=True)
            try:
                os.rename(self.root / name, aside)
            except FileNotFoundError:
                return
        shutil.rmtree(aside, ignore_errors=True)

    def run_lock(self, run: str) -> HeldLock:
        """A POSIX lock on .run-<run>.lock, which goes with the process that holds it."""
        return HeldLock(self.root / f".run-{run}.lock")

    def remove_abandoned(self, own_run: str) -> list[str]:
        """Delete the unpublished directories (and lock files) of runs that are not alive: a run is alive
        while its rank 0 holds its lock. Where the volume cannot lock (NFS with nolock) every other run
        counts as dead: a live one's staging may then be removed, and its publish fails (never a partial
        checkpoint). Returns the ids of other live runs."""
        if not self.root.is_dir():
            return []
        alive: dict[str, bool] = {}

        def is_alive(run: str) -> bool:
            if run not in alive:
                lock = self.run_lock(run)
                state = lock.acquire()
                alive[run] = state == "busy"
                lock.release(remove=state == "held")
            return alive[run]

        for path in self.root.iterdir():
            if not abandoned(path.name, own_run, is_alive):
                continue
            if path.is_dir():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)
        return sorted(run for run, live in alive.items() if live)


def is_legacy(manifest: dict[str, Any]) -> bool:
    """Whether a manifest is of the earlier layout (DeepSpeed's per-rank files): it has no "format"."""
    return manifest.get("format") is None


def newest_manifest(directory: str) -> tuple[Storage, str, dict[str, Any]] | None:
    """checkpoint.dir's newest published checkpoint whose manifest reads (unverified: no checksums), as
    (its Storage, tag, manifest): the one a resume tries first; None when there is none. ConfigError (one line)
    if an object store does not answer or its credentials may not list and write there."""
    storage = open_storage(directory, check=True)
    for _, tag in storage.published():
        manifest = storage.manifest(tag)
        if manifest is not None:
            return storage, tag, manifest
    return None
