"""Rank 0's MLflow run (output.tracking: mlflow; docs/trainer.md), continued across restarts. All MLflow work runs
on one daemon thread, so training never waits; a failure is one warning line. MLflow's async logging covers only
metrics, params and tags: kept ours (docs/benchmarks.md, "MLflow async logging")."""

from __future__ import annotations

import json
import logging
import math
import queue
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import yaml

from trainer.config import ConfigError, TrainConfig
from trainer.metrics import Outcome, warn
from trainer.run_state import RunState

STORE_DIR = "mlflow"
LOSS_PLOT = "loss.png"
SUMMARY = "summary.json"
PLAIN_EVENTS = ("train", "val")  # other events' fields get "<event>." in front
MLFLOW_STATUS: dict[Outcome, str] = {"finished": "FINISHED", "preempted": "KILLED", "failed": "FAILED"}
# the wait for the queue to drain at the end; short after a signal, within the pod's grace period
CLOSE_TIMEOUT_SECONDS: dict[Outcome, float] = {"finished": 300.0, "preempted": 10.0, "failed": 10.0}
MAX_TAG_LENGTH = 5000


def default_tracking_uri(output_dir: str | Path) -> str:
    """The SQLite store under output.dir, absolute: independent of the working directory."""
    return f"sqlite:///{(Path(output_dir).expanduser().resolve() / STORE_DIR / 'mlflow.db').as_posix()}"


def sqlite_artifact_location(tracking_uri: str) -> str | None:
    """Artifacts beside a SQLite store (else MLflow's ./mlruns of the working directory); None for a server."""
    if not tracking_uri.startswith("sqlite:///"):
        return None
    return (Path(tracking_uri.removeprefix("sqlite:///")).parent / "artifacts").resolve().as_uri()


def flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """{'model': {'n_layer': 2}} -> {'model.n_layer': '2'}; None as 'null', as in the YAML config."""
    flat: dict[str, str] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = "null" if value is None else str(value)
    return flat


def split_record(fields: Mapping[str, Any]) -> tuple[int, dict[str, float], dict[str, str]]:
    """A metrics.jsonl record as (step, metrics, tags): numbers are metrics, text and flags are tags."""
    event = str(fields.get("event", "record"))
    prefix = "" if event in PLAIN_EVENTS else f"{event}."
    step = int(fields.get("step") or 0)
    metrics: dict[str, float] = {}
    tags: dict[str, str] = {}
    for key, value in fields.items():
        if key in ("event", "step") or value is None:
            continue
        if isinstance(value, int | float) and not isinstance(value, bool):
            if math.isfinite(value):
                metrics[f"{prefix}{key}"] = float(value)
        else:
            text = value if isinstance(value, str) else json.dumps(value)
            tags[f"{prefix}{key}"] = text[:MAX_TAG_LENGTH]
    return step, metrics, tags


class MlflowTracker:
    """Rank 0's MLflow run; a MetricsSink whose MLflow calls all run on its own thread."""

    def __init__(self, config: TrainConfig, state: RunState, start_step: int) -> None:
        self.config, self.state, self.start_step = config, state, start_step
        self.output_dir = Path(config.output.dir).expanduser()
        self.tracking_uri = config.output.tracking_uri or default_tracking_uri(self.output_dir)
        self.run_id: str | None = None
        self.failed = False
        self._queue: queue.Queue[Callable[[], None] | None] = queue.Queue()
        self._client: Any = None
        self._thread = threading.Thread(target=self._work, name="mlflow", daemon=True)
        self._thread.start()
        self._queue.put(self._open)

    def record(self, fields: Mapping[str, Any]) -> None:
        timestamp = int(time.time() * 1000)
        self._queue.put(lambda: self._log_record(dict(fields), timestamp))

    def summary(self, fields: Mapping[str, Any]) -> None:
        self._queue.put(self._log_outputs)

    def close(self, outcome: Outcome) -> None:
        self._queue.put(lambda: self._finish(outcome))
        self._queue.put(None)
        timeout = CLOSE_TIMEOUT_SECONDS[outcome]
        self._thread.join(timeout=timeout)
        if self._thread.is_alive():
            warn(
                f"MLflow tracking did not finish within {timeout:g} s; the MLflow run may lack the last records"
            )

    def _work(self) -> None:
        while (task := self._queue.get()) is not None:
            if self.failed:
                continue
            try:
                task()
            except Exception as error:  # MLflow raises many kinds; none may reach training
                self.failed = True
                reason = " ".join(str(error).split())[:500]
                warn(f"MLflow tracking to {self.tracking_uri} failed: {reason}; training goes on without it")

    def _open(self) -> None:
        """Creates the MLflow run, or continues this run's, and logs the config."""
        for name in ("mlflow", "alembic"):  # their INFO lines (database migrations) would litter the log
            logging.getLogger(name).setLevel(logging.WARNING)
        from mlflow.entities import Param, RunTag
        from mlflow.tracking import MlflowClient

        client = self._client = MlflowClient(tracking_uri=self.tracking_uri)
        config = self.config.to_dict()
        params = flatten(config)
        stored = self.state.get("mlflow") or {}
        run = None
        if stored.get("tracking_uri") == self.tracking_uri and stored.get("run_id"):
            try:
                run = client.get_run(stored["run_id"])
            except Exception:  # deleted from the store, or another store at the same URI: a new run
                run = None
        if run is None:
            name, artifacts = self.config.output.experiment, sqlite_artifact_location(self.tracking_uri)
            experiment = client.get_experiment_by_name(name)
            if experiment is not None:
                experiment_id = experiment.experiment_id
            else:
                experiment_id = client.create_experiment(name, artifact_location=artifacts)
            run = client.create_run(experiment_id, tags={"trainstack.output_dir": str(self.output_dir)})
            self.run_id = run.info.run_id
            self.state.update(mlflow={"tracking_uri": self.tracking_uri, "run_id": self.run_id})
            client.log_batch(self.run_id, params=[Param(key, value) for key, value in params.items()])
        else:
            self.run_id = run.info.run_id
            client.update_run(self.run_id, status="RUNNING")
            logged = run.data.params
            new = [Param(key, value) for key, value in params.items() if key not in logged]
            changed = [
                RunTag(
                    f"config.{key}",
                    f"{value} (from step {self.start_step}; the run started with {logged[key]})",
                )
                for key, value in params.items()
                if key in logged and logged[key] != value
            ]
            client.log_batch(self.run_id, params=new, tags=changed)
        client.log_text(
            self.run_id,
            yaml.safe_dump(config, sort_keys=False),
            f"config/start_step_{self.start_step:06d}.yaml",
        )

    def _log_record(self, fields: dict[str, Any], timestamp: int) -> None:
        from mlflow.entities import Metric, RunTag

        step, metrics, tags = split_record(fields)
        self._client.log_batch(
            self.run_id,
            metrics=[Metric(key, value, timestamp, step) for key, value in metrics.items()],
            tags=[RunTag(key, value) for key, value in tags.items()],
        )

    def _log_outputs(self) -> None:
        """summary.json and the loss curve as artifacts."""
        from trainer.plot import plot_loss

        summary = self.output_dir / SUMMARY
        if summary.is_file():
            self._client.log_artifact(self.run_id, str(summary))
        plot = self.output_dir / LOSS_PLOT
        try:
            plot_loss(self.output_dir / "metrics.jsonl", plot)
        except ConfigError as error:  # no training records yet, or no matplotlib
            warn(f"no loss plot for MLflow: {error}")
            return
        self._client.log_artifact(self.run_id, str(plot))

    def _finish(self, outcome: Outcome) -> None:
        if self.run_id is not None:
            self._client.set_terminated(self.run_id, status=MLFLOW_STATUS[outcome])
