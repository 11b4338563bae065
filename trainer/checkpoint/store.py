"""CheckpointStore: each rank writes its share of every parameter's state, whole by name, in the background;
rank 0 publishes. A crash leaves an unpublished staging name, never read; runs never replace a complete one.
upstream: deepspeed runtime/engine.py save_checkpoint (per-rank ZeRO partitions, fixed world size) @ 0.19.8"""

from __future__ import annotations

import math
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import torch.distributed as dist

from trainer.checkpoint.layout import FORMAT, CheckpointError, Storage, shard_name, superseded, tag_for
from trainer.checkpoint.storage import newest_verified, open_storage
from trainer.distributed import DistContext, broadcast_from_main
from trainer.engine_state import (
    OPTIMIZER_KEYS,
    HostBuffers,
    parameter_owners,
    restore,
    run_state_of,
    set_rng_state,
    snapshot,
)
from trainer.metrics import warn


@dataclass
class Write:
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
    """The checkpoints of one checkpoint.dir; every method is called on every rank at the same point."""

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

    def remove_abandoned(self) -> None:
        if self.context.is_main:
            others = self.storage.remove_abandoned(self.run)
            if others:
                warn(
                    f"checkpoint.dir {self.storage.describe('')} is also being written by another live run "
                    f"({', '.join(others)}): both publish checkpoints there"
                )
        dist.barrier()

    def newest_complete(self) -> tuple[str, dict[str, Any]] | None:
        return broadcast_from_main(newest_verified(self.storage) if self.context.is_main else None)

    def published_count(self) -> int:
        return int(broadcast_from_main(len(self.storage.published()) if self.context.is_main else None))

    def load(self, engine: Any, tag: str, manifest: dict[str, Any]) -> dict[str, Any]:
        shards = [self.storage.read_shard(tag, name) for name in manifest["shards"]]
        run = restore(engine, shards)
        saved_world = manifest["world_size"]
        if self.context.rank < saved_world:
            set_rng_state(shards[self.context.rank]["rng"])
        else:
            warn(f"rank {self.context.rank}: {tag} was written by {saved_world} rank(s): RNG starts fresh")
        return dict(run["client_state"])

    def prepare(self, engine: Any) -> None:
        """Which rank writes which parameter; on a GPU, start allocating this rank's pinned buffers."""
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
        """Blocks for the snapshot to host memory (and the write in flight: CheckpointError if it failed)."""
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
        """The writes finished since the last call (raises if one failed)."""
        if self.in_flight is not None and self.in_flight.done.is_set():
            self._finish_in_flight()
        finished, self.finished = self.finished, []
        return finished

    def wait(self) -> list[Write]:
        self._finish_in_flight()
        return self.poll()

    def close(self, wait: bool) -> None:
        """wait: False for a failing run, which abandons the write in flight."""
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
        """The writer thread: this rank's shard, the ranks agree over their gloo group, rank 0 publishes."""
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
        """Then remove superseded checkpoints; (path, None) or (None, why not)."""
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
