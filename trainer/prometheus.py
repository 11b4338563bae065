"""Rank 0's /metrics on output.metrics_port: trainstack_* gauges (docs/trainer.md), NaN until known (a 0 would
read as a measurement); served on prometheus-client's own thread, so training never waits on a scrape."""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from typing import Any

from prometheus_client import CollectorRegistry, Gauge, PlatformCollector, ProcessCollector
from prometheus_client.exposition import start_http_server

from trainer.config import ConfigError
from trainer.metrics import Outcome

PREFIX = "trainstack"
LISTEN_ADDRESS = "0.0.0.0"  # the pod's IP is what a Service or PodMonitor scrapes
TRAIN_GAUGES = {"loss": "loss", "tokens_per_sec": "tokens_per_second", "mfu": "mfu"}


class PrometheusExporter:
    """A MetricsSink serving /metrics."""

    def __init__(self, port: int, max_steps: int, address: str = LISTEN_ADDRESS) -> None:
        """ConfigError naming output.metrics_port when the port cannot be bound."""
        self.registry = CollectorRegistry()
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        self.gauges = {
            name: Gauge(f"{PREFIX}_{name}", help_text, registry=self.registry)
            for name, help_text in (
                ("step", "Optimizer steps done."),
                ("max_steps", "Optimizer steps the run trains for (train.max_steps)."),
                ("loss", "Training loss of the last logged step, nats per token, mean over ranks."),
                ("val_loss", "Last validation loss, nats per token."),
                ("tokens_per_second", "Training tokens per second over all ranks, last logged interval."),
                ("mfu", "Model FLOPs utilisation (0..1) of the last logged interval."),
                ("restarts", "Earlier starts of this run (restarts seen)."),
                ("last_checkpoint_step", "Step of the newest checkpoint."),
            )
        }
        for unknown_yet in ("loss", "val_loss", "tokens_per_second", "mfu", "last_checkpoint_step"):
            self.gauges[unknown_yet].set(math.nan)
        self.gauges["max_steps"].set(max_steps)
        self.last_checkpoint = time.time()  # until one is known: the time training started
        since = Gauge(
            f"{PREFIX}_seconds_since_last_checkpoint",
            "Seconds since the newest checkpoint was written (or since training started, without one).",
            registry=self.registry,
        )
        since.set_function(lambda: time.time() - self.last_checkpoint)
        try:
            self.server, self.thread = start_http_server(port, address, registry=self.registry)
        except OSError as error:
            raise ConfigError(
                f"output.metrics_port: cannot serve /metrics on {address}:{port}: {error.strerror}"
            ) from None
        self.port = int(self.server.server_port)

    def restarts(self, count: int) -> None:
        self.gauges["restarts"].set(count)

    def checkpointed(self, step: int, unix_time: float) -> None:
        """The newest checkpoint: saved now, or the one a resumed run started from (its write time)."""
        self.gauges["last_checkpoint_step"].set(step)
        self.last_checkpoint = unix_time

    def record(self, fields: Mapping[str, Any]) -> None:
        step = fields.get("step")
        if isinstance(step, int):
            self.gauges["step"].set(step)
        event = fields.get("event")
        if event == "train":
            for field, gauge in TRAIN_GAUGES.items():
                if fields.get(field) is not None:
                    self.gauges[gauge].set(fields[field])
        elif event == "val" and fields.get("val_loss") is not None:
            self.gauges["val_loss"].set(fields["val_loss"])
        elif event == "checkpoint" and isinstance(step, int):
            self.checkpointed(step, time.time())

    def summary(self, fields: Mapping[str, Any]) -> None:
        """Nothing more: the records set every gauge."""

    def close(self, outcome: Outcome) -> None:
        if self.thread.is_alive():
            self.server.shutdown()
            self.server.server_close()
