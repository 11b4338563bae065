"""One worker process of a run: its identity checked, the data prepared, the process group, rank 0's
Prometheus endpoint, the Trainer's whole life, and its exit code left for `launch` (which torchrun hides)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from trainer import STATUS_DIR_ENV
from trainer.config import ConfigError, TrainConfig
from trainer.dataset import TokenCache
from trainer.distributed import DistContext, first_problem, init_distributed, process_identity, shutdown
from trainer.startup import StartupClock
from trainer.train import Trainer

if TYPE_CHECKING:
    from trainer.prometheus import PrometheusExporter


def report_exit_code(code: int) -> None:
    status_dir = os.environ.get(STATUS_DIR_ENV)
    if status_dir:
        rank = os.environ.get("RANK", "0")
        (Path(status_dir) / f"rank{rank}.exit").write_text(str(code), encoding="utf-8")


def train(config: TrainConfig) -> int:
    """Train (or resume) to train.max_steps; the exit code: 0, or PREEMPTED_EXIT_CODE after a stop signal."""
    clock = StartupClock()
    cache = TokenCache(config.data, config.model.block_size)  # a missing path or unknown encoding fails here
    # torchrun's variables checked first (a rank with a bad identity must not wait for a manifest), then the
    # data prepared before the process group: however long it takes, no rank waits on a collective (with its
    # timeout); the other ranks of the node wait on the manifest file.
    identity = process_identity(os.environ, torch.cuda.device_count() if torch.cuda.is_available() else 0)
    cache.ready(identity.local_rank if identity else 0)
    context = init_distributed(identity)
    clock.mark("rendezvous")
    try:
        exporter = start_exporter(config, context)
        try:
            return _train(config, cache, context, exporter, clock)
        finally:
            if exporter is not None:
                exporter.close("finished")
    finally:
        shutdown(context)


def start_exporter(config: TrainConfig, context: DistContext) -> PrometheusExporter | None:
    """Rank 0's /metrics endpoint (output.metrics_port), before anything is written; a port that cannot be
    bound is a ConfigError on every rank, so all of them exit 2 together."""
    exporter, problem = None, None
    if context.is_main and config.output.metrics_port is not None:
        from trainer.prometheus import PrometheusExporter

        try:
            exporter = PrometheusExporter(config.output.metrics_port, config.train.max_steps)
        except ConfigError as error:
            problem = str(error)
    if (problem := first_problem(problem)) is not None:
        raise ConfigError(problem)
    return exporter


def _train(
    config: TrainConfig,
    cache: TokenCache,
    context: DistContext,
    exporter: PrometheusExporter | None,
    clock: StartupClock,
) -> int:
    """The Trainer's whole life: once this returns nothing refers to it, and shutdown can free its engine
    and, with it, the process groups that the engine's optimizer and parameters hold."""
    trainer = Trainer(config, cache, context, exporter, clock)
    finished = False
    try:
        code = trainer.run()
        finished = True
        return code
    finally:
        trainer.close(wait=finished)
