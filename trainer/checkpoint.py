"""Checkpoints that resume at any world size and ZeRO stage, written in the background, counted only once
complete.

The layout under checkpoint.dir, the manifest and the Storage are trainer.checkpoint_storage's (no torch).

World-size independence. DeepSpeed's own checkpoints keep ZeRO's flat optimizer partitions per rank, which
load only at the world size that wrote them ("used a DP world size of 1 but the current world size is 2");
its universal checkpoints fix that with an offline conversion (ds_to_universal) and a load flag, and do not
cover ZeRO 0. Here every parameter's state is saved whole and by name (trainer.engine_state, through
DeepSpeed's stage-independent fragment API), and loaded back the same way. A checkpoint therefore resumes at any
world size, node count and ZeRO stage. Each parameter's state is written by one rank (a balanced split by
bytes), so the write and its checksums are shared among the ranks.

Background saving. `save` blocks the step loop only to copy the state to host memory (the snapshot; for
ZeRO >= 1 also the collectives that assemble each parameter's partitions); a writer thread per rank then
writes its shard, fsyncs and checksums it, and the ranks' writers agree over a gloo group of their own
(never the step loop's groups) on the outcome: rank 0's writer writes manifest.json into the staging
directory and renames it to step_N/ (atomic), then deletes old checkpoints. A new save while one is in flight
first waits for it (rather than skipping: every rank must make the same choice, and a skipped save would
lengthen the work a crash loses); `wait` is called at a stop signal and at the end of training. A crash at any
point leaves at most an unpublished step_N.tmp-<run>/, which is never read.

Concurrent writers. Two runs can write one checkpoint.dir at once: a pod on an unreachable node that is
force-deleted while its process still runs (JobSet itself recreates a Job only once the old one is gone:
it deletes Jobs with foreground propagation, jobset v0.12.0 pkg/controllers/jobset_controller.go), or two jobs
given the same directory. Staging directories carry the run's id, so they never collide; a run removes only
the unpublished directories of runs whose lock is free (dead); publishing never replaces a complete checkpoint
of the same step (rename fails onto a non-empty directory) and only replaces one that fails its checksums;
old checkpoints are renamed out of the step_N pattern before they are deleted. DeepSpeed's `latest` file is
not written (it is rewritten in place, not atomically).

Storage. CheckpointStore touches checkpoint.dir only through a Storage: LocalStorage (a directory, this layout)
or trainer.s3_storage.S3Storage (checkpoint.dir = s3://bucket/prefix: an object store has no rename, so there
the manifest uploaded last under the checkpoint's own prefix is what publishes it; see that module).
"""

from __future__ import annotations

import math
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import torch.distributed as dist

from trainer.checkpoint_storage import (
    FORMAT,
    CheckpointError,
    LocalStorage,
    Storage,
    is_legacy,
    newest_manifest,
    open_storage,
    shard_name,
    tag_for,
    warn,
)
from trainer.config import ConfigError, TrainConfig
from trainer.distributed import DistContext, broadcast_from_main
from trainer.engine import zero_stage
from trainer.engine_state import (
    OPTIMIZER_KEYS,
    HostBuffers,
    parameter_owners,
    restore,
    run_state_of,
    set_rng_state,
    snapshot,
)

# ---- checkpoints of an earlier trainer version: DeepSpeed's own per-rank layout ----


def legacy_zero_stage(manifest: dict[str, Any], read: Any) -> int:
    """The ZeRO stage recorded in a DeepSpeed-layout checkpoint's model-states file (ds_config)."""
    names = sorted(name for name in manifest["files"] if name.endswith("model_states.pt"))
    config = read(names[0]).get("ds_config") or {}
    return int(config.get("zero_optimization", {}).get("stage", 0))


@dataclass(frozen=True)
class LegacyCheckpoint:
    """A checkpoint in DeepSpeed's per-rank layout (a manifest without "format"): DeepSpeed loads it only at
    the ZeRO stage that wrote it, and with ZeRO >= 1 (per-rank optimizer partitions) only at its world size."""

    where: str
    zero_stage: int
    world_size: int | None  # None: the manifest does not say

    def problem(self, world_size: int, zero_stage: int) -> str | None:
        """Why it cannot resume on world_size ranks running zero_stage, or None."""
        if self.zero_stage == zero_stage and (zero_stage == 0 or self.world_size == world_size):
            return None
        return (
            f"checkpoint.dir: {self.where} was written by an earlier trainer in DeepSpeed's per-rank layout with "
            f"ZeRO stage {self.zero_stage} on {self.world_size} rank(s) and cannot resume on {world_size} "
            f"rank(s) running ZeRO stage {zero_stage}; run once more on {self.world_size} rank(s) with "
            f"train.zero_stage={self.zero_stage} (its next checkpoint resumes at any size), or use a new "
            "checkpoint.dir"
        )


def legacy_checkpoint(storage: Storage, tag: str, manifest: dict[str, Any]) -> LegacyCheckpoint | None:
    """The published checkpoint `tag` as a LegacyCheckpoint when it is of the earlier layout, else None."""
    if not is_legacy(manifest):
        return None
    stage = legacy_zero_stage(manifest, lambda name: storage.read_legacy(tag, name))
    saved_world = manifest.get("world_size")
    return LegacyCheckpoint(storage.describe(tag), stage, None if saved_world is None else int(saved_world))


def newest_verified(storage: Storage) -> tuple[str, dict[str, Any]] | None:
    """The newest published checkpoint whose files match its manifest (Storage.verify), as (tag,
    manifest); a warning names each newer one skipped and why. None when no checkpoint is complete."""
    for _, tag in storage.published():
        manifest, problem = storage.verify(tag)
        if manifest is not None:
            return tag, manifest
        warn(f"skipping checkpoint {storage.describe(tag)}: {problem}")
    return None


def superseded(published: list[tuple[int, str]], step: int, keep_last: int) -> list[str]:
    """The tags to delete once checkpoint `step` is published: all but the keep_last - 1 newest of those older
    than it (so keep_last are left, this one included). Newer ones (another run's, or a corrupt one this run
    replaces when it gets there) are not this save's to judge. published: (step, tag), newest first, as
    Storage.published lists them (whichever store holds them)."""
    older = [tag for saved, tag in published if saved < step]
    return older[keep_last - 1 :]


def resume_stage(config: TrainConfig, world_size: int) -> tuple[int, str | None]:
    """The ZeRO stage the engine runs for this config on world_size ranks, and why the newest checkpoint in
    checkpoint.dir cannot resume at it (None: it can, or there is none). A quick look at the manifest (no
    checksums), for `launch` before it starts any worker and for `train` before it builds the engine.

    Checkpoints of this layout resume at any stage: trainer.engine.zero_stage decides (0 on one rank). One of
    the earlier layout decides instead where it must: written by one rank at train.zero_stage, it is resumed by
    one rank running that stage (this once: its next checkpoint is of this layout); any other size or stage
    it cannot follow is the problem returned (LegacyCheckpoint.problem, the one rule for them). An object
    store that does not answer, or whose credentials may not list or write there, is the problem too.
    """
    stage = zero_stage(config, world_size)
    try:
        newest = newest_manifest(config.checkpoint.dir)
    except ConfigError as error:
        return stage, str(error)
    legacy = None if newest is None else legacy_checkpoint(*newest)
    if legacy is None:
        return stage, None
    if world_size == 1 and (legacy.zero_stage, legacy.world_size) == (config.train.zero_stage, 1):
        stage = config.train.zero_stage
    return stage, legacy.problem(world_size, stage)


# ---- the store ----


@dataclass
class Write:
    """One checkpoint being written in the background, and what became of it."""

    step: int
    tag: str
    staging: str
    blocked_s: float  # the step loop's time in save(): the snapshot
    waited_s: float  # of which the wait for the previous write
    started: float = field(default_factory=time.perf_counter)
    write_s: float | None = None  # writing, checksums, publishing (background)
    path: str | None = None  # where it was published
    error: str | None = None
    done: threading.Event = field(default_factory=threading.Event)


class CheckpointStore:
    """Saves (in the background), finds and loads the checkpoints of one checkpoint.dir. Every method is
    called on every rank at the same point of the run."""

    def __init__(
        self,
        directory: str,
        keep_last: int,
        context: DistContext,
        storage: Storage | None = None,
    ) -> None:
        self.storage = storage or open_storage(directory)
        self.keep_last = keep_last
        self.context = context
        self.run: str = broadcast_from_main(uuid.uuid4().hex[:12])
        # The writer threads' own collectives: gloo, on CPU objects, never mixed with the step loop's.
        self.group = dist.new_group(backend="gloo")
        self.buffers = HostBuffers()
        self.owners: dict[str, int] | None = None
        self.in_flight: Write | None = None
        self.finished: list[Write] = []
        self.lock = self.storage.run_lock(self.run) if context.is_main else None
        if self.lock is not None:
            self.lock.acquire()

    # -- resuming --

    def remove_abandoned(self) -> None:
        """Delete unpublished directories left by runs that are gone (before this run writes any)."""
        if self.context.is_main:
            others = self.storage.remove_abandoned(self.run)
            if others:
                warn(
                    f"checkpoint.dir {self.storage.describe('')} is also being written by another live run "
                    f"({', '.join(others)}): both publish checkpoints there"
                )
        dist.barrier()

    def newest_complete(self) -> tuple[str, dict[str, Any]] | None:
        """(tag, manifest) to resume from, decided by rank 0 and the same on every rank."""
        return broadcast_from_main(newest_verified(self.storage) if self.context.is_main else None)

    def published_count(self) -> int:
        """How many checkpoints are published, verified or not (rank 0's count, the same on every rank)."""
        return int(broadcast_from_main(len(self.storage.published()) if self.context.is_main else None))

    def load(self, engine: Any, tag: str, manifest: dict[str, Any]) -> dict[str, Any]:
        """Load a checkpoint into the engine and this rank's RNG; returns the client state. ConfigError if
        it cannot resume at this world size and ZeRO stage (only checkpoints of the earlier layout)."""
        if is_legacy(manifest):
            return self._load_legacy(engine, tag, manifest)
        shards = [self.storage.read_shard(tag, name) for name in manifest["shards"]]
        run = restore(engine, shards)
        saved_world = manifest["world_size"]
        if self.context.rank < saved_world:
            set_rng_state(shards[self.context.rank]["rng"])
        else:
            warn(f"rank {self.context.rank}: {tag} was written by {saved_world} rank(s): RNG starts fresh")
        return dict(run["client_state"])

    def _load_legacy(self, engine: Any, tag: str, manifest: dict[str, Any]) -> dict[str, Any]:
        legacy = legacy_checkpoint(self.storage, tag, manifest)
        # Only a directory holds this layout: S3Storage never reports a manifest without "format".
        assert legacy is not None and isinstance(self.storage, LocalStorage)
        # resume_stage has chosen the engine's stage for the newest checkpoint; this one may be older (the
        # newest failed its checksums).
        problem = legacy.problem(self.context.world_size, engine.zero_optimization_stage())
        if problem:
            raise ConfigError(problem)
        where = legacy.where
        path, client_state = engine.load_checkpoint(str(self.storage.root), tag=tag)
        if path is None:
            raise CheckpointError(f"DeepSpeed could not load checkpoint {where}")
        rng_file = f"rng_rank{self.context.rank:05d}.pt"
        if rng_file in manifest["files"]:
            set_rng_state(self.storage.read_legacy(tag, rng_file))
        else:
            warn(f"{where}/{rng_file} not found (the world size changed?): this rank's RNG starts fresh")
        return dict(client_state)

    # -- saving --

    def prepare(self, engine: Any) -> None:
        """Decide which rank writes which parameter; on a GPU start allocating this rank's pinned host
        buffers in the background. Called once the engine is built (save calls it if nobody did)."""
        named = list(engine.module.named_parameters())
        shapes = {name: tuple(getattr(p, "ds_shape", p.shape)) for name, p in named}  # ZeRO 3: ds_shape
        sizes = [(name, math.prod(shape)) for name, shape in shapes.items()]
        self.owners = parameter_owners(sizes, self.context.world_size)
        if named[0][1].device.type == "cuda":
            mine = [name for name in shapes if self.owners[name] == self.context.rank]
            self.buffers.prepare(
                {f"{name}/{key}": shapes[name] for name in mine for key in ("weight", *OPTIMIZER_KEYS)}
            )

    def save(
        self, engine: Any, step: int, client_state: dict[str, Any], manifest_extra: dict[str, Any]
    ) -> None:
        """Snapshot the state to host memory and write it in the background. Waits first for a write
        still in flight (and raises CheckpointError if that one failed)."""
        start = time.perf_counter()
        self._finish_in_flight()
        waited = time.perf_counter() - start
        if self.owners is None:
            self.prepare(engine)
        assert self.owners is not None
        run_state = run_state_of(engine, step, client_state) if self.context.is_main else None
        shard = snapshot(engine, self.owners, self.context.rank, self.buffers, run_state)
        tag = tag_for(step)
        write = Write(step, tag, f"{tag}.tmp-{self.run}", time.perf_counter() - start, waited)
        extra = {**manifest_extra, "zero_stage": engine.zero_optimization_stage()}
        thread = threading.Thread(
            target=self._write, args=(write, shard, extra), name="checkpoint-writer", daemon=True
        )
        self.in_flight = write
        thread.start()

    def poll(self) -> list[Write]:
        """The writes finished since the last call, without waiting (raises if one failed)."""
        if self.in_flight is not None and self.in_flight.done.is_set():
            self._finish_in_flight()
        finished, self.finished = self.finished, []
        return finished

    def wait(self) -> list[Write]:
        """Wait for the write in flight; the writes finished since the last call (raises if one failed)."""
        self._finish_in_flight()
        return self.poll()

    def close(self, wait: bool) -> None:
        """End of the run: wait for the write in flight (unless the run is failing: then it is abandoned,
        unpublished) and free this run's lock."""
        if wait:
            self._finish_in_flight()
        if self.lock is not None and self.in_flight is None:
            self.lock.release(remove=True)

    def _finish_in_flight(self) -> None:
        write, self.in_flight = self.in_flight, None
        if write is None:
            return
        write.done.wait()
        self.finished.append(write)
        if write.error is not None:
            raise CheckpointError(
                f"checkpoint {self.storage.describe(write.tag)} not published: {write.error}"
            )

    def _write(self, write: Write, shard: dict[str, Any], manifest_extra: dict[str, Any]) -> None:
        """The writer thread: this rank's shard, then the ranks agree, rank 0 publishes."""
        rank = self.context.rank
        try:
            report: tuple[dict[str, Any] | None, str | None]
            try:
                name = shard_name(rank)
                report = ({name: self.storage.write_shard(write.staging, name, shard)}, None)
            except Exception as error:
                report = (None, f"rank {rank}: {type(error).__name__}: {error}")
            del shard
            reports: list[Any] | None = [None] * self.context.world_size if self.context.is_main else None
            dist.gather_object(report, reports, dst=0, group=self.group)
            outcome: tuple[str | None, str | None] = (None, None)
            if reports is not None:
                try:
                    outcome = self._publish(write, reports, manifest_extra)
                except Exception as error:
                    outcome = (None, f"{type(error).__name__}: {error}")
            box = [outcome]
            dist.broadcast_object_list(box, src=0, group=self.group)
            write.path, write.error = box[0]
        except Exception as error:
            write.error = f"{type(error).__name__}: {error}"
        finally:
            write.write_s = time.perf_counter() - write.started
            write.done.set()

    def _publish(
        self, write: Write, reports: list[Any], manifest_extra: dict[str, Any]
    ) -> tuple[str | None, str | None]:
        """Rank 0's writer: the manifest, the atomic rename, the old checkpoints' removal.
        Returns (published path, None) or (None, why not)."""
        storage = self.storage
        errors = [error for _, error in reports if error]
        if errors:
            return None, "; ".join(errors)
        files = {name: record for written, _ in reports for name, record in written.items()}
        problem = storage.staged_problem(write.staging, files)
        if problem:  # e.g. removed by another run that took this one for dead
            return None, f"{storage.describe(write.staging)}: {problem}"
        manifest = {
            **manifest_extra,
            "format": FORMAT,
            "step": write.step,
            "world_size": self.context.world_size,
            "shards": [shard_name(rank) for rank in range(self.context.world_size)],
            "files": files,
        }
        if not storage.publish(write.staging, write.tag, manifest):
            existing, problem = storage.verify(write.tag)
            if existing is not None:  # another run published this step meanwhile: keep the first
                warn(f"{storage.describe(write.tag)} was already published by another run; keeping it")
                storage.remove(write.staging, self.run)
                return storage.describe(write.tag), None
            warn(f"replacing {storage.describe(write.tag)}: {problem}")
            storage.remove(write.tag, self.run)
            if not storage.publish(write.staging, write.tag, manifest):
                storage.remove(write.staging, self.run)
                return None, f"{storage.describe(write.tag)} was published by another run meanwhile"
        for tag in superseded(storage.published(), write.step, self.keep_last):
            storage.remove(tag, self.run)
        return storage.describe(write.tag), None
