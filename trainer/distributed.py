"""Process-group setup that works the same alone, under torchrun and in a Kubeflow TrainJob.

torchrun (and `python -m trainer launch`, which runs torchrun) sets RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR
and MASTER_PORT; a plain `python -m trainer train` sets none, and runs as a world of one. NCCL with one GPU
per local rank when CUDA is available, gloo on CPU.
"""

from __future__ import annotations

import contextlib
import gc
import os
import socket
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import timedelta
from types import EllipsisType
from typing import Any

import torch
import torch.distributed as dist

# Before any process group exists: torch.distributed.nn.functional gives ten collectives a
# `group=group.WORLD` default, evaluated at import. Imported later (torch.optim's first use of dynamo does),
# they would hold the default group, its gloo threads and its TCPStore daemon until interpreter teardown,
# out of shutdown()'s reach; imported now, the defaults are None.
import torch.distributed.nn.functional

from trainer.config import ConfigError, whole_number

# Long enough for rank 0 to tokenize a corpus while the others wait in a collective.
PROCESS_GROUP_TIMEOUT = timedelta(minutes=30)


@dataclass(frozen=True)
class DistContext:
    rank: int
    world_size: int
    local_rank: int
    device: torch.device
    # Where small control messages go: a gloo group on GPU so that agreeing on a flag never waits for
    # the CUDA stream; None means the default group (already gloo on CPU).
    control_group: Any = None

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# torchrun's per-worker variables (torch/distributed/elastic/agent/server/local_elastic_agent.py sets them all).
IDENTITY_VARIABLES = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")
REQUIRED_IDENTITY = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


@dataclass(frozen=True)
class ProcessIdentity:
    """Who this process is, as torchrun says: checked for presence and consistency."""

    rank: int  # 0 <= rank < world_size
    world_size: int
    local_rank: int  # 0 <= local_rank < local_world_size (when given) and < the visible GPUs (on GPU)
    master_addr: str
    master_port: int  # 1-65535


def process_identity(env: Mapping[str, str], cuda_devices: int) -> ProcessIdentity | None:
    """This process's place in the world from torchrun's variables; None when none of RANK, WORLD_SIZE,
    LOCAL_RANK is set (not under torchrun: a world of one). cuda_devices: GPUs visible to this process (0 on
    CPU). Raises ConfigError naming the first missing, empty, malformed or inconsistent variable."""
    if not any(name in env for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK")):
        return None
    for name in REQUIRED_IDENTITY:
        if not env.get(name, "").strip():
            state = "is set but empty" if name in env else "is not set"
            raise ConfigError(
                f"{name} {state}: under torchrun every process needs all of {', '.join(REQUIRED_IDENTITY)}"
            )
    value = {name: env[name].strip() for name in IDENTITY_VARIABLES if env.get(name, "").strip()}
    world_size = whole_number("WORLD_SIZE", value["WORLD_SIZE"], "a process count >= 1", 1)
    rank = whole_number(
        "RANK",
        value["RANK"],
        f"an integer from 0 to {world_size - 1} (WORLD_SIZE={world_size})",
        0,
        world_size - 1,
    )
    local_world = world_size
    if "LOCAL_WORLD_SIZE" in value:
        local_world = whole_number(
            "LOCAL_WORLD_SIZE",
            value["LOCAL_WORLD_SIZE"],
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
    """Within: `import name` raises ImportError, unless it is imported already; afterwards it imports again."""
    if name in sys.modules:
        yield
        return
    sys.modules[name] = None  # type: ignore[assignment]  # the import system's "not importable" marker
    try:
        yield
    finally:
        if sys.modules.get(name, ...) is None:
            del sys.modules[name]


def import_deepspeed() -> Any:
    """Import DeepSpeed without MLflow: its autotuner imports mlflow whenever it can (upstream: deepspeedai/
    DeepSpeed deepspeed/autotuning/autotuner.py @ v0.19.8), 1.6-1.9 s of every worker's start on this CPU
    (docs/benchmarks.md), for autotuning the trainer never runs. output.tracking: mlflow imports it itself,
    later, in its own thread."""
    with unimportable("mlflow"):
        import deepspeed
        import deepspeed.ops

    return deepspeed


def init_distributed(identity: ProcessIdentity | EllipsisType | None = ...) -> DistContext:
    """Join (or, alone, create) the process group and pick this rank's device. identity: this process's, as
    process_identity checked it (None: a world of one); not given: checked here, a missing or inconsistent
    torchrun variable raising ConfigError before anything else happens."""
    cuda_devices = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if isinstance(identity, EllipsisType):
        identity = process_identity(os.environ, cuda_devices)
    if identity is None:  # not under torchrun: a world of one
        os.environ.update(RANK="0", WORLD_SIZE="1", LOCAL_RANK="0", MASTER_ADDR="127.0.0.1")
        os.environ.setdefault("MASTER_PORT", str(free_port()))
        local_rank = 0
    else:
        local_rank = identity.local_rank
    if cuda_devices:
        torch.cuda.set_device(local_rank)
        device = torch.device("cuda", local_rank)
    else:
        os.environ.setdefault("DS_ACCELERATOR", "cpu")  # DeepSpeed reads it when first imported
        device = torch.device("cpu")
    deepspeed = import_deepspeed()
    if device.type == "cpu" and "OMP_NUM_THREADS" not in os.environ:
        # One thread per process, as torchrun gives each of its workers: the tiny preset ran 10x slower with
        # torch's default (a thread per core) on a busy 2-core machine (docs/benchmarks.md, "CPU threads").
        # OMP_NUM_THREADS=N asks for more.
        torch.set_num_threads(1)
    if device.type == "cpu":
        # DeepSpeed JIT-compiles a shared-memory all-reduce op (deepspeed_shm_comm) for CPU ranks, which
        # needs a C++ compiler at run time; the CUDA runtime images have none, and gloo does the same job.
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
    """Destroy every process group and free them, while the interpreter is still whole.

    A gloo group's threads (two pt_gloo_runloop workers, a gloo_tcp_loop) and the TCPStore's pt_tcpstore_uv
    daemon are joined only by the C++ destructors, which run when the last Python reference goes;
    destroy_process_group() alone leaves them running. deepspeed.comm's version also drops DeepSpeed's
    cached groups (deepspeed.utils.groups: the WORLD group ZeRO creates), the engine's own references go
    with the engine (Trainer.close), and the collection frees what is left in cycles: the destructors run
    here and not during interpreter teardown. (On GPU the control group is freed with the context.)
    """
    if not dist.is_initialized():
        return
    import deepspeed.comm

    if context is not None and context.control_group is not None:
        deepspeed.comm.destroy_process_group(context.control_group)
    deepspeed.comm.destroy_process_group()  # the default group and every other one left
    gc.collect()


def any_rank(flag: bool, context: DistContext) -> bool:
    """True on every rank if flag is true on any rank (a MAX all-reduce on the CPU control group)."""
    value = torch.tensor([1 if flag else 0], dtype=torch.int32)
    dist.all_reduce(value, op=dist.ReduceOp.MAX, group=context.control_group)
    return bool(value.item())


def mean_over_ranks(value: float, device: torch.device) -> float:
    total = torch.tensor([value], dtype=torch.float64, device=device)
    dist.all_reduce(total)
    return float(total.item()) / dist.get_world_size()


def gather_objects(item: Any) -> list[Any]:
    """Every rank's item, on every rank (also a barrier)."""
    items: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(items, item)
    return items


def first_problem(problem: str | None) -> str | None:
    """The first rank's problem (None: none has one), on every rank: they all stop on the same line."""
    return next((p for p in gather_objects(problem) if p), None)


def broadcast_from_main(item: Any) -> Any:
    """Rank 0's item, on every rank."""
    box = [item]
    dist.broadcast_object_list(box, src=0)
    return box[0]
