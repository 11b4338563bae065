"""Rank 0's progress in the TrainJob's status.trainerStatus, posted by a daemon thread at most every
MIN_INTERVAL_SECONDS: never slows or stops training; a failure is one warning line, a recovery one more.
upstream: kubeflow/trainer pkg/runtime/framework/plugins/trainjobstatus, pkg/statusserver @ v2.3.0"""

from __future__ import annotations

import json
import os
import ssl
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from trainer.metrics import Outcome, warn

URL_ENV = "KUBEFLOW_TRAINER_SERVER_URL"  # .../trainjobs/<name>/status, where a POST updates the status
CA_CERT_ENV = "KUBEFLOW_TRAINER_SERVER_CA_CERT"  # a file: that endpoint's CA
TOKEN_ENV = "KUBEFLOW_TRAINER_SERVER_TOKEN"  # a file, rotated: re-read for every post
MIN_INTERVAL_SECONDS = 5.0  # the Trainer's guidance, which its SDK follows too
REQUEST_TIMEOUT_SECONDS = 5.0
MAX_METRIC_TEXT = 64  # the API's limit for a metric's name and its value


def status_request(
    step: int, max_steps: int, metrics: Mapping[str, float | int | None], remaining_seconds: float | None
) -> dict[str, Any]:
    """An UpdateTrainJobStatusRequest body (Trainer v2.3.0's JSON field names)."""
    shown = [
        {"name": name[:MAX_METRIC_TEXT], "value": f"{value:.6g}"[:MAX_METRIC_TEXT]}
        for name, value in metrics.items()
        if value is not None
    ]
    trainer_status: dict[str, Any] = {
        "progressPercentage": max(0, min(100, (100 * step) // max_steps)),
        "metrics": shown,
        "lastUpdatedTime": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),  # metav1.Time: RFC 3339, UTC
    }
    if remaining_seconds is not None:
        trainer_status["estimatedRemainingSeconds"] = max(0, int(remaining_seconds))
    return {"trainerStatus": trainer_status}


class TrainJobStatusReporter:
    """A MetricsSink posting to the Trainer's status endpoint."""

    def __init__(self, url: str, ca_cert: Path, token: Path, max_steps: int) -> None:
        self.url, self.ca_cert, self.token, self.max_steps = url, ca_cert, token, max_steps
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._pending: dict[str, Any] | None = None
        self._closing = self._failing = False
        self._last_post = -MIN_INTERVAL_SECONDS
        self.step = 0
        self.values: dict[str, float | int | None] = {"loss": None, "val_loss": None}
        self.step_time: float | None = None
        self.sent = 0  # successful posts (tests read it)
        self._thread = threading.Thread(target=self._run, name="trainjob-status", daemon=True)
        self._thread.start()

    @classmethod
    def from_environment(cls, max_steps: int) -> TrainJobStatusReporter | None:
        """None unless the Trainer injected its endpoint (a TrainJob with the TrainJobStatus feature gate)."""
        url, ca_cert, token = (os.environ.get(name) for name in (URL_ENV, CA_CERT_ENV, TOKEN_ENV))
        return cls(url, Path(ca_cert), Path(token), max_steps) if url and ca_cert and token else None

    def record(self, fields: Mapping[str, Any]) -> None:
        event = fields.get("event")
        if isinstance(fields.get("step"), int):
            self.step = fields["step"]
        if event == "train":
            self.values["loss"] = fields.get("loss")
            if fields.get("step_time_ms") is not None:
                self.step_time = fields["step_time_ms"] / 1000
        elif event == "val":
            self.values["val_loss"] = fields.get("val_loss")
        elif event not in ("start", "checkpoint"):
            return
        self._submit()

    def summary(self, fields: Mapping[str, Any]) -> None:
        if fields.get("final_step") is not None:
            self.step = fields["final_step"]
        self._submit()

    def close(self, outcome: Outcome) -> None:
        """The last snapshot now (one bounded try) unless the endpoint has been failing."""
        with self._lock:
            self._closing = True
            self._wake.notify()
        self._thread.join(timeout=REQUEST_TIMEOUT_SECONDS + 1)

    def _submit(self) -> None:
        remaining = None if self.step_time is None else (self.max_steps - self.step) * self.step_time
        metrics = {"step": self.step, "total_steps": self.max_steps, **self.values}
        body = status_request(self.step, self.max_steps, metrics, remaining)
        with self._lock:
            self._pending = body
            self._wake.notify()

    def _run(self) -> None:
        while True:
            with self._lock:
                while True:
                    wait = self._last_post + MIN_INTERVAL_SECONDS - time.monotonic()
                    if self._closing or (self._pending is not None and wait <= 0):
                        break
                    self._wake.wait(timeout=wait if self._pending is not None else None)
                body, self._pending = self._pending, None
                closing = self._closing
                self._last_post = time.monotonic()
            if body is not None and not (closing and self._failing):
                self._post(body)
            if closing:
                return

    def _post(self, body: dict[str, Any]) -> None:
        try:
            context = ssl.create_default_context(cafile=str(self.ca_cert))
            token = self.token.read_text(encoding="utf-8").strip()  # rotated by the kubelet: read each time
            request = urllib.request.Request(
                self.url,
                data=json.dumps(body).encode(),
                method="POST",
                headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
            )
            with urllib.request.urlopen(request, timeout=REQUEST_TIMEOUT_SECONDS, context=context) as reply:
                reply.read()
        except (OSError, ValueError, ssl.SSLError) as error:  # URLError, HTTPError and timeouts are OSErrors
            if not self._failing:
                warn(
                    f"cannot report progress to the TrainJob status ({self.url}): {describe(error)};"
                    f" training goes on, retrying at most every {MIN_INTERVAL_SECONDS:g} s"
                    " (this warning is not repeated)"
                )
                self._failing = True
            return
        if self._failing:
            print("TrainJob status reporting works again", file=sys.stderr, flush=True)
            self._failing = False
        self.sent += 1


def describe(error: BaseException) -> str:
    """An HTTP error's status and the API's message, or the network error's reason."""
    if isinstance(error, urllib.error.HTTPError):
        try:
            message = json.loads(error.read() or b"{}").get("message", "")
        except (ValueError, OSError, AttributeError):
            message = ""
        return f"HTTP {error.code} {message}".strip()
    if isinstance(error, urllib.error.URLError):
        return str(error.reason)
    return str(error)
