"""Checkpoints that count only once complete, and resume from the newest complete one.

Layout under checkpoint.dir:

    step_000100/                      a published checkpoint
        mp_rank_00_model_states.pt    DeepSpeed's files (model, optimizer, LR schedule, client state)
        *_optim_states.pt             ZeRO optimizer partitions, one per rank (stage >= 1)
        rng_rank00000.pt              every rank's RNG state
        manifest.json                 written last: step, world size, every file's size and sha256
    step_000150.tmp/                  being written (or abandoned by a crash): never read

Saving: every rank writes into step_N.tmp/, all ranks meet at a barrier, rank 0 checksums the files, writes
manifest.json, fsyncs and renames the directory to step_N/ (atomic on POSIX), then deletes all but the newest
keep_last. DeepSpeed's own `latest` file is not used: it is written in place, not atomically.
Loading: the newest step_N/ whose manifest matches its files is used; newer ones that do not are skipped
with a warning.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import sys
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from trainer.distributed import DistContext, broadcast_from_main

MANIFEST = "manifest.json"
TAG_PATTERN = re.compile(r"^step_(\d+)$")
TEMPORARY_SUFFIX = ".tmp"


def tag_for(step: int) -> str:
    return f"step_{step:06d}"


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def fsync_path(path: Path) -> None:
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def write_manifest(directory: Path, step: int, world_size: int, extra: dict[str, Any]) -> None:
    files = {}
    for path in sorted(p for p in directory.rglob("*") if p.is_file()):
        fsync_path(path)
        files[path.relative_to(directory).as_posix()] = {
            "bytes": path.stat().st_size,
            "sha256": sha256_of(path),
        }
    manifest = {**extra, "step": step, "world_size": world_size, "files": files}
    with open(directory / MANIFEST, "w", encoding="utf-8") as handle:
        json.dump(manifest, handle, indent=1, sort_keys=True)
        handle.flush()
        os.fsync(handle.fileno())


def read_manifest(directory: Path) -> tuple[dict[str, Any] | None, str | None]:
    """(manifest, None) if a published checkpoint's files match its manifest, else (None, the problem)."""
    try:
        manifest = json.loads((directory / MANIFEST).read_text(encoding="utf-8"))
        files = manifest["files"]
    except (OSError, ValueError, KeyError, TypeError) as error:
        return None, f"no readable {MANIFEST} ({type(error).__name__})"
    problem = _files_problem(directory, files)
    return (None, problem) if problem else (manifest, None)


def _files_problem(directory: Path, files: dict[str, Any]) -> str | None:
    for name, expected in files.items():
        path = directory / name
        if not path.is_file():
            return f"{name} is missing"
        if path.stat().st_size != expected["bytes"]:
            return f"{name} has {path.stat().st_size} bytes, the manifest says {expected['bytes']}"
        if sha256_of(path) != expected["sha256"]:
            return f"{name} does not match its checksum"
    return None


def warn(message: str) -> None:
    print(f"warning: {message}", file=sys.stderr, flush=True)


class CheckpointStore:
    """Saves, finds and loads the checkpoints of one run directory; every method is called on every rank."""

    def __init__(self, directory: str, keep_last: int, context: DistContext) -> None:
        self.root = Path(directory).expanduser()
        self.keep_last = keep_last
        self.context = context

    def published(self) -> list[tuple[int, Path]]:
        """(step, directory) of every published checkpoint, newest first."""
        if not self.root.is_dir():
            return []
        found = []
        for path in self.root.iterdir():
            match = TAG_PATTERN.match(path.name)
            if match and path.is_dir():
                found.append((int(match.group(1)), path))
        return sorted(found, reverse=True)

    def newest_complete(self) -> tuple[str, dict[str, Any]] | None:
        """(tag, manifest) to resume from, decided by rank 0 and the same on every rank."""
        choice = None
        if self.context.is_main:
            for _, path in self.published():
                manifest, problem = read_manifest(path)
                if manifest is not None:
                    choice = (path.name, manifest)
                    break
                warn(f"skipping checkpoint {path}: {problem}")
        return broadcast_from_main(choice)

    def remove_abandoned(self) -> None:
        """Delete half-written step_N.tmp/ directories left by a crash (before this run writes any)."""
        if self.context.is_main and self.root.is_dir():
            for path in self.root.glob(f"step_*{TEMPORARY_SUFFIX}"):
                shutil.rmtree(path, ignore_errors=True)
        dist.barrier()

    def save(
        self, engine: Any, step: int, client_state: dict[str, Any], manifest_extra: dict[str, Any]
    ) -> Path:
        tag = tag_for(step)
        staging = self.root / f"{tag}{TEMPORARY_SUFFIX}"
        final = self.root / tag
        if self.context.is_main:
            shutil.rmtree(staging, ignore_errors=True)
        dist.barrier()
        engine.save_checkpoint(str(self.root), tag=staging.name, client_state=client_state, save_latest=False)
        torch.save(rng_state(), staging / f"rng_rank{self.context.rank:05d}.pt")
        dist.barrier()  # every rank has written its files
        if self.context.is_main:
            write_manifest(staging, step, self.context.world_size, manifest_extra)
            if final.exists():  # a re-save of the same step (e.g. after a resume): replace it
                shutil.rmtree(final)
            os.replace(staging, final)
            fsync_path(self.root)
            for _, old in self.published()[self.keep_last :]:
                shutil.rmtree(old, ignore_errors=True)
        dist.barrier()  # nobody goes on (or exits) before the checkpoint is published
        return final

    def load(self, engine: Any, tag: str) -> dict[str, Any]:
        """Load model, optimizer and LR schedule into the engine and this rank's RNG; return client state."""
        path, client_state = engine.load_checkpoint(str(self.root), tag=tag)
        if path is None:
            raise RuntimeError(f"DeepSpeed could not load checkpoint {self.root / tag}")
        rng_file = self.root / tag / f"rng_rank{self.context.rank:05d}.pt"
        if rng_file.is_file():
            set_rng_state(torch.load(rng_file, weights_only=False))
        else:
            warn(f"{rng_file} not found (the world size changed?): this rank's RNG starts fresh")
        return dict(client_state)


def rng_state() -> dict[str, Any]:
    state: dict[str, Any] = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])
