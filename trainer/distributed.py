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
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist

# Before any process group exists: torch.distributed.nn.functional gives ten collectives a
# `group=group.WORLD` default, evaluated at import. Imported later (torch.optim's first use of dynamo does),
# they would hold the default group, its gloo threads and its TCPStore daemon until interpreter teardown,
# out of shutdown()'s reach; imported now, the defaults are None.
import torch.distributed.nn.functional

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


def init_distributed() -> DistContext:
    """Join (or, alone, create) the process group and pick this rank's device."""
    if "RANK" not in os.environ:  # not under torchrun: a world of one
        os.environ.update(RANK="0", WORLD_SIZE="1", LOCAL_RANK="0", MASTER_ADDR="127.0.0.1")
        os.environ.setdefault("MASTER_PORT", str(free_port()))
    local_rank = int(os.environ["LOCAL_RANK"])
    if torch.cuda.is_available():
        torch.cuda.set_device(local_rank)
        device = torch.device("cuda", local_rank)
    else:
        os.environ.setdefault("DS_ACCELERATOR", "cpu")  # DeepSpeed reads it when first imported
        device = torch.device("cpu")
    import deepspeed
    import deepspeed.ops

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


def broadcast_from_main(item: Any) -> Any:
    """Rank 0's item, on every rank."""
    box = [item]
    dist.broadcast_object_list(box, src=0)
    return box[0]
