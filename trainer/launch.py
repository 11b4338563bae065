"""`python -m trainer launch`, a TrainJob's container command: torchrun (or the one worker) from Kubeflow's PET_*
variables, in its own session, signals forwarded. torchrun exits 1 for any failure and for a stop alike, so the
workers report their own exit codes in a status directory and `outcome` maps them."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import IO, TextIO

from trainer import PREEMPTED_EXIT_CODE, SHUTDOWN_TIMEOUT_ENV, STATUS_DIR_ENV, USAGE_EXIT_CODE
from trainer.checkpoint.storage import resume_problem
from trainer.config import ConfigError, TrainConfig, load_config, whole_number
from trainer.startup import LAUNCH_START_ENV, process_start
from trainer.writable import check_writable

# upstream: kubeflow/trainer pkg/runtime/framework/plugins/torch/torch.go @ v2.3.0 (PET_NODE_RANK from the
# job-completion-index annotation, PET_MASTER_ADDR <trainjob>-node-0-0.<trainjob>, PET_MASTER_PORT 29500)
NODE_RANK_SOURCE = (
    "Kubeflow Trainer fills it from the pod's batch.kubernetes.io/job-completion-index annotation, "
    "which only an Indexed Job has (the TrainingRuntime must state completionMode: Indexed)"
)
NPROC_WORDS = ("auto", "gpu", "cpu")
# set on torchrun's workers; upstream: pytorch/pytorch torch/distributed/elastic/agent/server/local_elastic_agent.py @ v2.13.0
TORCHRUN_WORKER_ENV = "TORCHELASTIC_RUN_ID"
LOOPBACK = "127.0.0.1"


@dataclass(frozen=True)
class NodeIdentity:
    nnodes: str  # N, or MIN:MAX (torchrun's static rendezvous then waits for MAX nodes)
    max_nodes: int
    nproc_per_node: str  # a count, or auto/gpu/cpu
    node_rank: int  # 0 <= node_rank < max_nodes
    master_addr: str
    master_port: int | None  # None: a free local port (a single node only)


def node_identity(env: Mapping[str, str]) -> NodeIdentity:
    """PET_* checked before any work (unset: one local node); several nodes need rank, address and port."""
    values = {}
    for name in ("PET_NNODES", "PET_NPROC_PER_NODE", "PET_NODE_RANK", "PET_MASTER_ADDR", "PET_MASTER_PORT"):
        if name in env and not env[name].strip():
            why = f": {NODE_RANK_SOURCE}" if name == "PET_NODE_RANK" else ""
            raise ConfigError(
                f"{name} is set but empty; it says who this process is and cannot be defaulted{why}"
            )
        values[name] = env[name].strip() if name in env else None

    nnodes = values["PET_NNODES"] or "1"
    match = re.fullmatch(r"(\d+)(?::(\d+))?", nnodes)
    allowed_nodes = "a node count N >= 1 or a range MIN:MAX with 1 <= MIN <= MAX"
    if not match or int(match.group(1)) < 1 or (match.group(2) and int(match.group(2)) < int(match.group(1))):
        raise ConfigError(f"PET_NNODES: expected {allowed_nodes}, got {nnodes!r}")
    max_nodes = int(match.group(2) or match.group(1))

    nproc = values["PET_NPROC_PER_NODE"] or "1"
    if nproc not in NPROC_WORDS:
        whole_number(
            "PET_NPROC_PER_NODE", nproc, f"a process count >= 1 or one of {', '.join(NPROC_WORDS)}", 1
        )

    if max_nodes > 1:
        needed = {
            "PET_NODE_RANK": f"each node's rank, 0 to {max_nodes - 1} ({NODE_RANK_SOURCE})",
            "PET_MASTER_ADDR": "the address of node 0, where the rendezvous runs",
            "PET_MASTER_PORT": "the rendezvous port on node 0",
        }
        for name, what in needed.items():
            if values[name] is None:
                raise ConfigError(f"{name} is not set: with PET_NNODES={nnodes} it must give {what}")
    rank = whole_number(
        "PET_NODE_RANK",
        values["PET_NODE_RANK"] or "0",
        f"an integer from 0 to {max_nodes - 1} (PET_NNODES={nnodes})",
        0,
        max_nodes - 1,
    )
    address = values["PET_MASTER_ADDR"] or LOOPBACK
    if re.search(r"\s", address):
        raise ConfigError(f"PET_MASTER_ADDR: expected a host name or address, got {address!r}")
    port = values["PET_MASTER_PORT"]
    if port is not None:
        whole_number("PET_MASTER_PORT", port, "a TCP port 1-65535", 1, 65535)
    return NodeIdentity(
        nnodes=nnodes,
        max_nodes=max_nodes,
        nproc_per_node=nproc,
        node_rank=rank,
        master_addr=address,
        master_port=None if port is None else int(port),
    )


def shutdown_timeout(env: Mapping[str, str]) -> int | None:
    if (value := env.get(SHUTDOWN_TIMEOUT_ENV)) is None:
        return None
    return whole_number(SHUTDOWN_TIMEOUT_ENV, value.strip(), "a whole number of seconds >= 0", 0)


def torchrun_has_shutdown_timeout() -> bool:
    """--shutdown-timeout came with pytorch/pytorch#172596. Imports torch: asked by a worker, never `launch`."""
    from torch.distributed.run import get_args_parser

    return any("--shutdown-timeout" in action.option_strings for action in get_args_parser()._actions)


def shutdown_timeout_warning(env: Mapping[str, str]) -> str | None:
    """Said once per node by a worker: `launch` imports no torch, or recovery would wait for a second import."""
    if SHUTDOWN_TIMEOUT_ENV not in env or TORCHRUN_WORKER_ENV not in env or env.get("LOCAL_RANK") != "0":
        return None
    if torchrun_has_shutdown_timeout():
        return None
    return (
        f"warning: {SHUTDOWN_TIMEOUT_ENV} ignored: this torch's torchrun has no --shutdown-timeout and SIGKILLs"
        " its workers 30 s after a SIGTERM"
    )


def train_arguments(config_path: str, overrides: list[str]) -> list[str]:
    return ["-m", "trainer", "train", "--config", config_path, *(a for o in overrides for a in ("--set", o))]


def worker_start(
    config_path: str, overrides: list[str], env: Mapping[str, str]
) -> tuple[list[str], dict[str, str]]:
    """(command, variables): one process per fixed node is the worker itself (torchrun costs an import)."""
    identity = node_identity(env)
    shutdown_timeout(env)
    if identity.nproc_per_node != "1" or ":" in identity.nnodes:
        return torchrun_command(config_path, overrides, identity), {}
    command = [sys.executable, *train_arguments(config_path, overrides)]
    if identity.master_port is None:
        return command, {}
    # Rank 0 reaches its own store on loopback: after a restart DNS may give the previous pod's address for
    # its TTL (a resumed worker waited 14 s there, docs/benchmarks.md).
    address = LOOPBACK if identity.node_rank == 0 else identity.master_addr
    return command, {
        "RANK": str(identity.node_rank),
        "WORLD_SIZE": identity.nnodes,
        "LOCAL_RANK": "0",
        "LOCAL_WORLD_SIZE": "1",
        "MASTER_ADDR": address,
        "MASTER_PORT": str(identity.master_port),
    }


def torchrun_command(config_path: str, overrides: list[str], identity: NodeIdentity) -> list[str]:
    """torchrun reads TORCH_ELASTIC_SHUTDOWN_TIMEOUT itself, so no option is passed.
    upstream: pytorch/pytorch torch/distributed/launcher/api.py LaunchConfig.__post_init__ @ v2.13.0"""
    port = identity.master_port
    if port is None:
        from trainer.distributed import free_port  # imports torch

        port = free_port()
    return [
        sys.executable, "-m", "torch.distributed.run",
        f"--nnodes={identity.nnodes}",
        f"--nproc-per-node={identity.nproc_per_node}",
        f"--node-rank={identity.node_rank}",
        f"--master-addr={identity.master_addr}",
        f"--master-port={port}",
        *train_arguments(config_path, overrides),
    ]  # fmt: skip


def outcome(torchrun_code: int, worker_codes: list[int], signal_received: int | None) -> int:
    """Preemption first, as in the pod failure policy: a restart resumes, and bad input then fails it itself."""
    if torchrun_code == 0:
        return 0
    if PREEMPTED_EXIT_CODE in worker_codes:
        return PREEMPTED_EXIT_CODE
    if USAGE_EXIT_CODE in worker_codes:
        return USAGE_EXIT_CODE
    if signal_received is not None:  # stopped before the workers could save (e.g. while starting up)
        return 128 + signal_received
    # killed by signal N: the shell's 128+N
    return 128 - torchrun_code if torchrun_code < 0 else torchrun_code


# torchrun's traceback for the signal it was sent; upstream: pytorch/pytorch
# torch/distributed/elastic/multiprocessing/api.py _terminate_process_handler @ v2.13.0
TORCHRUN_STOPPED = "torch.distributed.elastic.multiprocessing.api.SignalException:"


def relay_stderr(source: IO[str], sink: TextIO) -> None:
    """Copies torchrun's (and its workers') stderr but for torchrun's traceback for an expected stop."""
    held: list[str] = []
    for line in source:
        if held or line.startswith("Traceback (most recent call last):"):
            held.append(line)
            if line[:1] in (" ", "\t") or line.startswith("Traceback"):
                continue
            if not line.startswith(TORCHRUN_STOPPED):
                sink.writelines(held)
            held = []
        else:
            sink.write(line)
        sink.flush()
    sink.writelines(held)
    sink.flush()


def check_resumable(config: TrainConfig) -> None:
    """An unresumable checkpoint or unusable store: one line before any worker (manifests only, no torch)."""
    if problem := resume_problem(config.checkpoint.dir):
        raise ConfigError(problem)


def launch(config_path: str, overrides: list[str]) -> int:
    config = load_config(config_path, overrides)  # a bad config fails here, once, not in every worker
    check_writable(config)
    command, worker_env = worker_start(config_path, overrides, os.environ)  # every PET_* value checked first
    check_resumable(config)
    from trainer.prepare import run_prepare  # the node's data before any worker: no rank waits on it

    run_prepare(config.data)
    with tempfile.TemporaryDirectory(prefix="trainstack-status-") as status_dir:
        # Its own session: a terminal's Ctrl-C reaches torchrun once, through us, like Kubernetes' SIGTERM.
        env = {**os.environ, **worker_env, STATUS_DIR_ENV: status_dir, LAUNCH_START_ENV: str(process_start())}
        process = subprocess.Popen(
            command, env=env, start_new_session=True, stderr=subprocess.PIPE, text=True, errors="replace"
        )
        assert process.stderr is not None
        relay = threading.Thread(target=relay_stderr, args=(process.stderr, sys.stderr), daemon=True)
        relay.start()
        received: list[int] = []

        def forward(signum: int, frame: FrameType | None) -> None:
            received.append(signum)
            process.send_signal(signum)

        previous = {sig: signal.signal(sig, forward) for sig in (signal.SIGTERM, signal.SIGINT)}
        try:
            torchrun_code = process.wait()
            relay.join()  # the workers' last lines (they may outlive torchrun by a moment)
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        worker_codes = [int(p.read_text()) for p in Path(status_dir).glob("rank*.exit")]
    return outcome(torchrun_code, worker_codes, received[0] if received else None)
