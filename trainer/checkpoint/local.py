"""Checkpoints in a directory (disk, hostPath, NFS): staging published by rename(2), never over a full one."""

from __future__ import annotations

import errno
import json
import os
import shutil
from pathlib import Path
from typing import Any

from trainer.checkpoint.layout import (
    MANIFEST,
    TAG_PATTERN,
    abandoned,
    file_record,
    files_problem,
    unsupported,
)
from trainer.shared_files import HeldLock, fsync_directory, sha256_of


def read_manifest(directory: Path) -> tuple[dict[str, Any] | None, str | None]:
    try:
        manifest = json.loads((directory / MANIFEST).read_text(encoding="utf-8"))
        files = manifest["files"]
    except (OSError, ValueError, KeyError, TypeError) as error:
        return None, f"no readable {MANIFEST} ({type(error).__name__})"
    if unsupported(manifest):
        return None, f"it is {unsupported(manifest)}"
    problem = _files_problem(directory, files, checksums=True)
    return (None, problem) if problem else (manifest, None)


def _files_problem(directory: Path, files: dict[str, Any], checksums: bool) -> str | None:
    def size_of(name: str) -> int | None:
        path = directory / name
        return path.stat().st_size if path.is_file() else None

    return files_problem(files, size_of, (lambda name: sha256_of(directory / name)) if checksums else None)


class LocalStorage:
    def __init__(self, directory: str) -> None:
        self.root = Path(directory).expanduser()

    def describe(self, name: str) -> str:
        return str(self.root / name)

    def published(self) -> list[tuple[int, str]]:
        if not self.root.is_dir():
            return []
        found = []
        for path in self.root.iterdir():
            match = TAG_PATTERN.match(path.name)
            if match and path.is_dir():
                found.append((int(match.group(1)), path.name))
        return sorted(found, reverse=True)

    def published_at(self, tag: str) -> float:
        return os.stat(self.root / tag).st_mtime

    def manifest(self, tag: str) -> dict[str, Any] | None:
        try:
            manifest = json.loads((self.root / tag / MANIFEST).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        return manifest if isinstance(manifest, dict) else None

    def verify(self, tag: str) -> tuple[dict[str, Any] | None, str | None]:
        return read_manifest(self.root / tag)

    def write_shard(self, staging: str, name: str, state: dict[str, Any]) -> dict[str, Any]:
        """Into a staging directory (created if needed), fsynced."""
        directory = self.root / staging
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / name
        import torch  # only where a shard is written or read: never in `launch`

        torch.save(state, path)
        with open(path, "rb") as handle:
            os.fsync(handle.fileno())
        return file_record(path)

    def read_shard(self, tag: str, name: str) -> dict[str, Any]:
        import torch  # memory-mapped: tensors are read as they are used

        return torch.load(self.root / tag / name, map_location="cpu", mmap=True, weights_only=True)

    def staged_problem(self, staging: str, files: dict[str, Any]) -> str | None:
        return _files_problem(self.root / staging, files, checksums=False)

    def publish(self, staging: str, tag: str, manifest: dict[str, Any]) -> bool:
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
        """A published checkpoint is renamed out of the step_N pattern first (atomic), then deleted."""
        aside = self.root / (name if ".tmp-" in name else f"{name}.tmp-{run}.old")
        if aside.name != name:
            shutil.rmtree(aside, ignore_errors=True)
            try:
                os.rename(self.root / name, aside)
            except FileNotFoundError:
                return
        shutil.rmtree(aside, ignore_errors=True)

    def run_lock(self, run: str) -> HeldLock:
        return HeldLock(self.root / f".run-{run}.lock")

    def remove_abandoned(self, own_run: str) -> list[str]:
        """Where the volume cannot lock (NFS nolock) other runs count as dead: their publish fails, whole."""
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
