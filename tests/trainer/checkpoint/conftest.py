"""The checkpoint tests' shared parts: a Storage under test on a directory and on a real S3 server, and a
CheckpointStore in one process with fake collectives and a fake engine state."""

from __future__ import annotations

import hashlib
import io
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch

from tests.support.s3_server import S3Server
from trainer.checkpoint.layout import Storage, file_record, tag_for
from trainer.checkpoint.local import LocalStorage
from trainer.checkpoint.store import CheckpointStore
from trainer.distributed import DistContext


class Backend:
    """A Storage under test and direct access to what it stores, bypassing it: the same shared rules are
    tested on a directory (LocalStorage) and on a real S3-compatible server (S3Storage)."""

    storage: Storage

    def stage(self, staging: str, name: str, content: bytes) -> None:
        """Put a file into a staging name as a writer would, bypassing the storage."""
        raise NotImplementedError

    def replace(self, tag: str, name: str, content: bytes | None) -> None:
        """Overwrite (None: delete) a file of a published checkpoint, bypassing the storage."""
        raise NotImplementedError

    def names(self) -> list[str]:
        """Every file stored, relative to checkpoint.dir, sorted."""
        raise NotImplementedError


class LocalBackend(Backend):
    def __init__(self, root: Path) -> None:
        self.root = root
        self.storage = LocalStorage(str(root))

    def stage(self, staging: str, name: str, content: bytes) -> None:
        (self.root / staging / name).parent.mkdir(parents=True, exist_ok=True)
        (self.root / staging / name).write_bytes(content)

    def replace(self, tag: str, name: str, content: bytes | None) -> None:
        if content is None:
            (self.root / tag / name).unlink()
        else:
            (self.root / tag / name).write_bytes(content)

    def names(self) -> list[str]:
        return sorted(p.relative_to(self.root).as_posix() for p in self.root.rglob("*") if p.is_file())


class S3Backend(Backend):
    def __init__(self, url: str, client: Any) -> None:
        from trainer.checkpoint.s3 import S3Storage

        self.s3 = S3Storage(url)
        self.storage = self.s3
        self.client = client

    def put(self, name: str, content: bytes) -> None:
        self.client.put_object(Bucket=self.s3.bucket, Key=self.s3.key(name), Body=content)

    def stage(self, staging: str, name: str, content: bytes) -> None:
        self.put(f"{self.s3.data_prefix(staging)}{name}", content)

    def replace(self, tag: str, name: str, content: bytes | None) -> None:
        if name != "manifest.json":
            name = f"{json.loads(self.raw(f'{tag}/manifest.json'))['objects']}{name}"
        if content is None:
            self.client.delete_object(Bucket=self.s3.bucket, Key=self.s3.key(f"{tag}/{name}"))
        else:
            self.put(f"{tag}/{name}", content)

    def raw(self, name: str) -> bytes:
        return bytes(self.client.get_object(Bucket=self.s3.bucket, Key=self.s3.key(name))["Body"].read())

    def names(self) -> list[str]:
        pages = self.client.get_paginator("list_objects_v2").paginate(Bucket=self.s3.bucket)
        return sorted(self.s3.relative(o["Key"]) for page in pages for o in page.get("Contents", []))


@pytest.fixture(params=["local", pytest.param("s3", marks=pytest.mark.slow)])
def backend(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Backend:
    """Each shared-rule test on a fresh directory and on a fresh bucket of the real S3 test server."""
    if request.param == "local":
        return LocalBackend(tmp_path)
    server: S3Server = request.getfixturevalue("s3_server")
    for name, value in server.environment().items():
        monkeypatch.setenv(name, value)
    return S3Backend(f"s3://{server.new_bucket()}/runs/ckpt", server.client())


def record(content: bytes) -> dict[str, object]:
    """A manifest entry from the published formula: size in bytes and sha256 of the content."""
    return {"bytes": len(content), "sha256": hashlib.sha256(content).hexdigest()}


def staged(backend: Backend, staging: str, content: bytes) -> dict[str, dict[str, object]]:
    """A staging name holding a shard and a nested file; their manifest records."""
    backend.stage(staging, "model.pt", content)
    backend.stage(staging, "sub/rng.pt", b"rng")
    return {"model.pt": record(content), "sub/rng.pt": record(b"rng")}


def publish_step(backend: Backend, step: int, run: str, content: bytes = b"weights") -> dict[str, Any]:
    files = staged(backend, f"{tag_for(step)}.tmp-{run}", content)
    manifest = {"format": 2, "step": step, "world_size": 2, "model": {"n_layer": 2}, "files": files}
    assert backend.storage.publish(f"{tag_for(step)}.tmp-{run}", tag_for(step), manifest)
    return manifest


WRITER_GROUP = "the store's gloo group"


class Collectives:
    """torch.distributed as CheckpointStore uses it, in one process that is rank `rank`: what the other ranks
    send is scripted (`peers`: their writers' reports, gathered by rank 0; `from_main`: rank 0's broadcasts,
    in order, as a rank other than 0 receives them). The writers' collectives must use the store's own
    group (never the step loop's) and rank 0 as root."""

    def __init__(self, rank: int, peers: list[Any], from_main: list[Any]) -> None:
        self.rank, self.peers, self.from_main = rank, peers, from_main
        self.groups: list[dict[str, Any]] = []
        self.barriers = 0
        self.sent: list[Any] = []
        self.broken: Exception | None = None

    def new_group(self, **kwargs: Any) -> str:
        self.groups.append(kwargs)
        return WRITER_GROUP

    def barrier(self) -> None:
        self.barriers += 1

    def broadcast_from_main(self, item: Any) -> Any:
        return item if self.rank == 0 else self.from_main.pop(0)

    def gather_object(self, obj: Any, object_gather_list: list[Any] | None = None, dst: int = -1,
                      group: Any = None) -> None:  # fmt: skip
        assert (dst, group) == (0, WRITER_GROUP)
        if self.broken is not None:
            raise self.broken
        if self.rank != 0:
            assert object_gather_list is None
            self.sent.append(obj)
            return
        assert object_gather_list == [None] * (1 + len(self.peers))
        object_gather_list[:] = [obj, *self.peers]

    def broadcast_object_list(self, objects: list[Any], src: int = -1, group: Any = None) -> None:
        assert (src, group) == (0, WRITER_GROUP) and len(objects) == 1
        if self.rank == 0:
            self.sent.append(objects[0])
        else:
            objects[0] = self.from_main.pop(0)


class EngineState:
    """trainer.engine_state's snapshot, run_state_of, restore and set_rng_state for a FakeEngine: a shard
    holds the owned parameters' weights, an RNG marker and (rank 0) the run state; calls are recorded."""

    def __init__(self) -> None:
        self.snapshots: list[tuple[Any, ...]] = []
        self.restored: list[list[dict[str, Any]]] = []
        self.restored_into: list[Any] = []  # the engines restore loaded into
        self.run_states_of: list[Any] = []  # the engines whose run state was taken
        self.rng: list[Any] = []

    def run_state_of(self, engine: Any, step: int, client_state: dict[str, Any]) -> dict[str, Any]:
        self.run_states_of.append(engine)
        return {"step": step, "client_state": dict(client_state)}

    def snapshot(
        self, engine: Any, owners: dict[str, int], rank: int, buffers: Any, run_state: Any
    ) -> dict[str, Any]:
        self.snapshots.append((engine, owners, rank, buffers, run_state))
        params = {name: {"weight": p.detach().clone()} for name, p in engine.module.named_parameters()
                  if owners[name] == rank}  # fmt: skip
        shard: dict[str, Any] = {"params": params, "rng": {"torch": torch.tensor([100 + rank])}}
        if run_state is not None:
            shard["run"] = run_state
        return shard

    def restore(self, engine: Any, shards: list[dict[str, Any]]) -> dict[str, Any]:
        self.restored.append(shards)
        self.restored_into.append(engine)
        return dict(next(shard["run"] for shard in shards if "run" in shard))

    def set_rng_state(self, state: Any) -> None:
        self.rng.append(state)


class FakeEngine:
    """The DeepSpeed engine as the store sees it: a module, a ZeRO stage, DeepSpeed's own loader."""

    def __init__(self, stage: int = 0) -> None:
        torch.manual_seed(0)
        self.module = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Linear(4, 1))
        self.stage = stage
        self.loaded: list[tuple[str, str]] = []
        self.load_result: tuple[str | None, dict[str, Any] | None] = (None, None)

    def zero_optimization_stage(self) -> int:
        return self.stage

    def load_checkpoint(self, load_dir: str, tag: str) -> tuple[str | None, dict[str, Any] | None]:
        self.loaded.append((load_dir, tag))
        return self.load_result


@dataclass
class Harness:
    """A CheckpointStore of rank `rank` on tmp_path, its fake collectives and engine state."""

    store: CheckpointStore
    world: Collectives
    state: EngineState
    root: Path


@pytest.fixture
def make_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    state = EngineState()
    for name in ("snapshot", "run_state_of", "restore", "set_rng_state"):
        monkeypatch.setattr(f"trainer.checkpoint.store.{name}", getattr(state, name))
    stores: list[CheckpointStore] = []

    def make(rank: int = 0, world_size: int = 1, keep_last: int = 3, peers: list[Any] | None = None,
             from_main: list[Any] | None = None, **kwargs: Any) -> Harness:  # fmt: skip
        world = Collectives(rank, peers or [], from_main or [])
        monkeypatch.setattr("trainer.checkpoint.store.dist", world)
        monkeypatch.setattr("trainer.checkpoint.store.broadcast_from_main", world.broadcast_from_main)
        context = DistContext(rank, world_size, rank, torch.device("cpu"))
        store = CheckpointStore(str(tmp_path), keep_last, context, **kwargs)
        stores.append(store)
        return Harness(store, world, state, tmp_path)

    yield make
    for store in stores:  # no writer thread outlives its test
        if store.in_flight is not None:
            store.in_flight.done.wait(10)
        if store.lock is not None:
            store.lock.release()


def block_buffered(monkeypatch: pytest.MonkeyPatch) -> io.BytesIO:
    """sys.stderr as a block-buffered stream (a file, or a pipe where Python buffers it); what is written
    reaches the bytes returned only when flushed."""
    written = io.BytesIO()
    monkeypatch.setattr(sys, "stderr", io.TextIOWrapper(written, encoding="utf-8", line_buffering=False))
    return written


def staged_directory(storage: LocalStorage, name: str, content: bytes) -> dict[str, dict[str, object]]:
    """A staging directory holding a shard and a nested file; their manifest records."""
    directory = storage.root / name
    (directory / "sub").mkdir(parents=True)
    (directory / "model.pt").write_bytes(content)
    (directory / "sub" / "rng.pt").write_bytes(b"rng")
    return {
        "model.pt": file_record(directory / "model.pt"),
        "sub/rng.pt": file_record(directory / "sub" / "rng.pt"),
    }
