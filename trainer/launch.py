"""`python -m trainer launch`: the container command of a Kubeflow TrainJob.

Kubeflow Trainer's torch-distributed runtime describes the job in PET_* variables (PET_NNODES,
PET_NPROC_PER_NODE, PET_NODE_RANK, PET_MASTER_ADDR, PET_MASTER_PORT). This builds the torchrun command from
them (a single local process when they are absent), runs it in its own session, forwards SIGTERM/SIGINT to it,
and maps the outcome to the trainer's exit codes: torchrun itself exits 1 for any worker failure and also when
it was stopped by a signal, so the workers report their own exit code in a status directory.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import tempfile
from collections.abc import Mapping
from pathlib import Path
from types import FrameType

from trainer import PREEMPTED_EXIT_CODE, STATUS_DIR_ENV, USAGE_EXIT_CODE
from trainer.config import ConfigError, TrainConfig, load_config

# variable -> (pattern its value must match, what is allowed, default when unset)
PET_VARIABLES: dict[str, tuple[str, str, str | None]] = {
    "PET_NNODES": (r"\d+(:\d+)?", "a node count N or a range MIN:MAX", "1"),
    "PET_NPROC_PER_NODE": (r"\d+|auto|gpu|cpu", "a process count, auto, gpu or cpu", "1"),
    "PET_NODE_RANK": (r"\d+", "a non-negative integer", "0"),
    "PET_MASTER_ADDR": (r"\S+", "a host name or address", "127.0.0.1"),
    "PET_MASTER_PORT": (r"\d{1,5}", "a TCP port number", None),  # None: a free local port
}


def torchrun_command(config_path: str, overrides: list[str], env: Mapping[str, str]) -> list[str]:
    values = {}
    for name, (pattern, allowed, default) in PET_VARIABLES.items():
        value = env.get(name, "").strip() or default
        if value is None:
            from trainer.distributed import free_port  # imports torch: only when needed

            value = str(free_port())
        if not re.fullmatch(pattern, value):
            raise ConfigError(f"{name}: expected {allowed}, got {value!r}")
        values[name] = value
    sets = [arg for override in overrides for arg in ("--set", override)]
    return [
        sys.executable, "-m", "torch.distributed.run",
        f"--nnodes={values['PET_NNODES']}",
        f"--nproc-per-node={values['PET_NPROC_PER_NODE']}",
        f"--node-rank={values['PET_NODE_RANK']}",
        f"--master-addr={values['PET_MASTER_ADDR']}",
        f"--master-port={values['PET_MASTER_PORT']}",
        "-m", "trainer", "train", "--config", config_path, *sets,
    ]  # fmt: skip


def outcome(torchrun_code: int, worker_codes: list[int], signal_received: int | None) -> int:
    """The launcher's exit code from torchrun's and the workers' reported ones."""
    if torchrun_code == 0:
        return 0
    if PREEMPTED_EXIT_CODE in worker_codes:  # they saved a checkpoint and stopped: a restart resumes
        return PREEMPTED_EXIT_CODE
    if USAGE_EXIT_CODE in worker_codes:
        return USAGE_EXIT_CODE
    if signal_received is not None:  # stopped before the workers could save (e.g. while starting up)
        return 128 + signal_received
    return torchrun_code


def check_resumable(config: TrainConfig, env: Mapping[str, str]) -> None:
    """A checkpoint that this job cannot resume (see trainer.checkpoint.resume_problem) stops the launch
    here, on one line, before any worker starts; an elastic node range leaves it to the workers."""
    nnodes, nproc = env.get("PET_NNODES", "").strip() or "1", env.get("PET_NPROC_PER_NODE", "").strip() or "1"
    if not (nnodes.isdigit() and nproc.isdigit()) or not Path(config.checkpoint.dir).expanduser().is_dir():
        return
    from trainer.checkpoint import resume_problem  # imports torch: only when there may be a checkpoint

    problem = resume_problem(config.checkpoint.dir, int(nnodes) * int(nproc), config.train.zero_stage)
    if problem:
        raise ConfigError(problem)


def launch(config_path: str, overrides: list[str]) -> int:
    config = load_config(config_path, overrides)  # a bad config fails here, once, not in every worker
    command = torchrun_command(config_path, overrides, os.environ)
    check_resumable(config, os.environ)
    with tempfile.TemporaryDirectory(prefix="trainstack-status-") as status_dir:
        # Its own session: a terminal's Ctrl-C reaches torchrun once, through us, like Kubernetes' SIGTERM.
        process = subprocess.Popen(
            command, env={**os.environ, STATUS_DIR_ENV: status_dir}, start_new_session=True
        )
        received: list[int] = []

        def forward(signum: int, frame: FrameType | None) -> None:
            received.append(signum)
            process.send_signal(signum)

        previous = {sig: signal.signal(sig, forward) for sig in (signal.SIGTERM, signal.SIGINT)}
        try:
            torchrun_code = process.wait()
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        worker_codes = [int(p.read_text()) for p in Path(status_dir).glob("rank*.exit")]
    return outcome(torchrun_code, worker_codes, received[0] if received else None)
