"""The process group, the same alone (a world of one), under torchrun and in a TrainJob: NCCL with a GPU per
local rank, gloo on CPU; and the few collectives the trainer uses."""

from __future__ import annotations

import contextlib
import gc
import os
import socket
import sys
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, TypeVar

import torch
import torch.distributed as dist

# Imported before any group exists, its collectives' `group=group.WORLD` defaults are None; imported later
# (dynamo does) they would hold the default group and its threads past shutdown().
import torch.distributed.nn.functional

from trainer.config import ConfigError, whole_number

T = TypeVar("T")
PROCESS_GROUP_TIMEOUT = timedelta(minutes=30)  # rank 0 may tokenize a corpus while the others wait


@dataclass(frozen=True)
class DistContext:
    rank: int
    world_size: int
    local_rank: int
    device: torch.device
    # gloo on GPU, so agreeing on a flag never waits for the CUDA stream; None: the default group
    control_group: Any = None

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# upstream: pytorch/pytorch torch/distributed/elastic/agent/server/local_elastic_agent.py @ v2.13.0
REQUIRED_IDENTITY = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")  # + LOCAL_WORLD_SIZE


@dataclass(frozen=True)
class ProcessIdentity:
    rank: int  # 0 <= rank < world_size
    world_size: int
    local_rank: int  # 0 <= local_rank < local_world_size (when given) and < the visible GPUs (on GPU)
    master_addr: str
    master_port: int  # 1-65535


def process_identity(env: Mapping[str, str], cuda_devices: int) -> ProcessIdentity | None:
    """torchrun's variables checked (ConfigError naming the first bad one); None when not under torchrun."""
    if not any(name in env for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK")):
        return None
    for name in REQUIRED_IDENTITY:
        if not env.get(name, "").strip():
            state = "is set but empty" if name in env else "is not set"
            raise ConfigError(
                f"{name} {state}: under torchrun every process needs all of {', '.join(REQUIRED_IDENTITY)}"
            )
    value = {name: env[name].strip() for name in REQUIRED_IDENTITY}
    world_size = whole_number("WORLD_SIZE", value["WORLD_SIZE"], "a process count >= 1", 1)
    rank = whole_number(
        "RANK",
        value["RANK"],
        f"an integer from 0 to {world_size - 1} (WORLD_SIZE={world_size})",
        0,
        world_size - 1,
    )
    local_world = whole_number(  # unset: the whole world is local
        "LOCAL_WORLD_SIZE",
        env.get("LOCAL_WORLD_SIZE", "").strip() or str(world_size),
        f"a process count from 1 to WORLD_SIZE={world_size}",
        1,
        world_size,
    )
    local_rank = whole_number(
        "LOCAL_RANK",
        value["LOCAL_RANK"],
        f"an integer from 0 to {local_world - 1} (LOCAL_WORLD_SIZE / WORLD_SIZE {local_world})",
        0,
        local_world - 1,
    )
    if cuda_devices and local_rank >= cuda_devices:
        raise ConfigError(
            f"LOCAL_RANK ({local_rank}) has no GPU: {cuda_devices} visible; run at most one process per GPU"
            " (PET_NPROC_PER_NODE / --nproc-per-node)"
        )
    port = whole_number("MASTER_PORT", value["MASTER_PORT"], "a TCP port 1-65535", 1, 65535)
    return ProcessIdentity(rank, world_size, local_rank, value["MASTER_ADDR"], port)


@contextlib.contextmanager
def unimportable(name: str) -> Iterator[None]:
    """Within: `import name` raises ImportError, unless it is imported already."""
    if name in sys.modules:
        yield
        return
    sys.modules[name] = None  # type: ignore[assignment]  # the import system's "not importable" marker
    try:
        yield
    finally:
        if sys.modules.get(name, ...) is None:
            del sys.modules[name]


# upstream: deepspeedai/DeepSpeed deepspeed/autotuning/autotuner.py @ v0.19.8 (imports mlflow)
def import_deepspeed() -> Any:
    """DeepSpeed without the MLflow its autotuner imports (1.6-1.9 s a start, docs/benchmarks.md)."""
    with unimportable("mlflow"):
        import deepspeed
        import deepspeed.ops

    return deepspeed


def init_distributed() -> DistContext:
    """Join the group torchrun's variables name (not under torchrun: create a world of one); pick the device."""
    cuda_devices = torch.cuda.device_count() if torch.cuda.is_available() else 0
    identity = process_identity(os.environ, cuda_devices)
    local_rank = 0 if identity is None else identity.local_rank
    if identity is None:
        os.environ.update(RANK="0", WORLD_SIZE="1", LOCAL_RANK="0", MASTER_ADDR="127.0.0.1")
        os.environ.setdefault("MASTER_PORT", str(free_port()))
    if cuda_devices:
        torch.cuda.set_device(local_rank)
        device = torch.device("cuda", local_rank)
    else:
        os.environ.setdefault("DS_ACCELERATOR", "cpu")  # DeepSpeed reads it when first imported
        device = torch.device("cpu")
    deepspeed = import_deepspeed()
    if device.type == "cpu" and "OMP_NUM_THREADS" not in os.environ:
        # One thread, as torchrun gives: torch's default ran 10x slower on a busy 2-core machine
        # (docs/benchmarks.md, "CPU threads").
        torch.set_num_threads(1)
    if device.type == "cpu":
        # its JIT-compiled shm all-reduce needs a C++ compiler, which the images lack; gloo does the job
        deepspeed.ops.__compatible_ops__["deepspeed_shm_comm"] = False
    # stdout carries only metrics: drop DeepSpeed's "op built successfully" print (warnings go to stderr)
    with open(os.devnull, "w") as devnull, contextlib.redirect_stdout(devnull):
        deepspeed.init_distributed(
            dist_backend="nccl" if device.type == "cuda" else "gloo",
            auto_mpi_discovery=False,
            verbose=False,
            timeout=PROCESS_GROUP_TIMEOUT,
        )
    control_group = dist.new_group(backend="gloo") if device.type == "cuda" else None
    return DistContext(dist.get_rank(), dist.get_world_size(), local_rank, device, control_group)


def shutdown(context: DistContext | None = None) -> None:
    """Free every group while the interpreter is whole: gloo's and TCPStore's threads end in C++ destructors."""
    if not dist.is_initialized():
        return
    import deepspeed.comm

    if context is not None and context.control_group is not None:
        deepspeed.comm.destroy_process_group(context.control_group)
    deepspeed.comm.destroy_process_group()
    gc.collect()


def any_rank(flag: bool, context: DistContext) -> bool:
    """True on every rank if flag is true on any rank."""
    value = torch.tensor([1 if flag else 0], dtype=torch.int32)
    dist.all_reduce(value, op=dist.ReduceOp.MAX, group=context.control_group)
    return bool(value.item())


def mean_over_ranks(value: float, device: torch.device) -> float:
    total = torch.tensor([value], dtype=torch.float64, device=device)
    dist.all_reduce(total)
    return float(total.item()) / dist.get_world_size()


def on_every_rank(attempt: Callable[[], T]) -> T:
    """attempt()'s result; the first rank's ConfigError raised on every rank (also a barrier): one line for all."""
    result, problem = None, None
    try:
        result = attempt()
    except ConfigError as error:
        problem = error
    problems: list[ConfigError | None] = [None] * dist.get_world_size()
    dist.all_gather_object(problems, problem)
    if (first := next((p for p in problems if p is not None), None)) is not None:
        raise first
    return result  # type: ignore[return-value]  # attempt() returned: no problem on this rank


def broadcast_from_main(item: Any) -> Any:
    box = [item]
    dist.broadcast_object_list(box, src=0)
    return box[0]
