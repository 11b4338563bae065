"""One worker process: identity, data, process group, rank 0's /metrics, the Trainer, and its exit code left for
`launch` (torchrun hides it)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from trainer import STATUS_DIR_ENV
from trainer.config import TrainConfig
from trainer.dataset import TokenCache
from trainer.distributed import DistContext, init_distributed, on_every_rank, process_identity, shutdown
from trainer.startup import StartupClock
from trainer.train import Trainer

if TYPE_CHECKING:
    from trainer.prometheus import PrometheusExporter


def report_exit_code(code: int) -> None:
    if status_dir := os.environ.get(STATUS_DIR_ENV):
        (Path(status_dir) / f"rank{os.environ.get('RANK', '0')}.exit").write_text(str(code), encoding="utf-8")


def train(config: TrainConfig) -> int:
    """Train (or resume); 0, or PREEMPTED_EXIT_CODE after a stop signal."""
    clock = StartupClock()
    cache = TokenCache(config.data, config.model.block_size)
    # identity first (a bad rank must not wait for a manifest), then the data before the process group: no rank
    # waits on a collective (with its timeout) however long it takes
    identity = process_identity(os.environ, torch.cuda.device_count() if torch.cuda.is_available() else 0)
    cache.ready(identity.local_rank if identity else 0)
    context = init_distributed()  # the same identity, from the same variables
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
    """Rank 0's /metrics before anything is written; a port it cannot bind fails every rank (exit 2 together)."""

    def start() -> PrometheusExporter | None:
        if not context.is_main or config.output.metrics_port is None:
            return None
        from trainer.prometheus import PrometheusExporter

        return PrometheusExporter(config.output.metrics_port, config.train.max_steps)

    return on_every_rank(start)


def _train(
    config: TrainConfig,
    cache: TokenCache,
    context: DistContext,
    exporter: PrometheusExporter | None,
    clock: StartupClock,
) -> int:
    """The Trainer's whole life: once it returns nothing refers to it, so shutdown frees the engine's groups."""
    trainer = Trainer(config, cache, context, exporter, clock)
    finished = False
    try:
        code = trainer.run()
        finished = True
        return code
    finally:
        trainer.close(wait=finished)
