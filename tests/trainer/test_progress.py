"""trainer.progress: TrainJob status reports, against a local HTTPS endpoint that checks what Kubeflow Trainer's
status server checks (path, bearer token, an UpdateTrainJobStatusRequest body, parsed with Trainer's own
published API models), and against endpoints that fail or hang."""

from __future__ import annotations

import json
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from kubeflow_trainer_api.models import TrainerV1alpha1UpdateTrainJobStatusRequest

from tests.support.k8s_validation import normalise
from trainer import progress
from trainer.progress import TrainJobStatusReporter, status_request

from .conftest import TINY_CONFIG, metrics, run, run_overrides, trainer_command

STATUS_PATH = "/apis/trainer.kubeflow.org/v1alpha1/namespaces/team-a/trainjobs/gpt/status"


def test_status_request_is_trainers_update_request() -> None:
    body = status_request(
        50, 200, {"step": 50, "total_steps": 200, "loss": 3.14159265, "val_loss": None}, 75.9
    )
    parsed = TrainerV1alpha1UpdateTrainJobStatusRequest.from_dict(body)
    assert parsed is not None and parsed.trainer_status is not None
    round_trip = normalise(parsed.to_dict())  # no field outside Trainer's API
    when = round_trip["trainerStatus"].pop("lastUpdatedTime")
    status = body["trainerStatus"]
    assert round_trip["trainerStatus"] == {k: v for k, v in status.items() if k != "lastUpdatedTime"}
    assert when.utcoffset() is not None and when.strftime("%Y-%m-%dT%H:%M:%SZ") == status["lastUpdatedTime"]
    assert status["progressPercentage"] == 25 and status["estimatedRemainingSeconds"] == 75
    # Values are strings (the API's type); an unknown value is left out rather than sent as "None".
    assert status["metrics"] == [
        {"name": "step", "value": "50"},
        {"name": "total_steps", "value": "200"},
        {"name": "loss", "value": "3.14159"},
    ]


@dataclass
class StatusEndpoint:
    """An HTTPS status endpoint; it rotates the token file after each request, as the kubelet does hourly."""

    url: str
    ca_cert: Path
    token: Path
    bodies: list[dict[str, Any]] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


def make_certificate(directory: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 (openssl), which is also its own CA."""
    cert, key = directory / "tls.crt", directory / "tls.key"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )  # fmt: skip
    return cert, key


@pytest.fixture
def endpoint(tmp_path: Path) -> Iterator[StatusEndpoint]:
    cert, key = make_certificate(tmp_path)
    token = tmp_path / "token"
    token.write_text("token-0\n")
    found = StatusEndpoint("", cert, token)

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            expected = f"Bearer {token.read_text().strip()}"
            if self.path != STATUS_PATH:
                found.problems.append(f"path {self.path}")
            if self.headers.get("Authorization") != expected:
                found.problems.append(f"token {self.headers.get('Authorization')} != {expected}")
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            found.bodies.append(body)
            token.write_text(f"token-{len(found.bodies)}\n")
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(json.dumps(body).encode())

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    found.url = f"https://127.0.0.1:{server.server_address[1]}{STATUS_PATH}"
    yield found
    server.shutdown()
    server.server_close()


def test_reports_are_rate_limited_and_the_last_one_is_sent_at_close(
    endpoint: StatusEndpoint, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(progress, "MIN_INTERVAL_SECONDS", 1.0)
    reporter = TrainJobStatusReporter(endpoint.url, endpoint.ca_cert, endpoint.token, max_steps=100)
    reporter.record({"event": "start", "step": 0})
    deadline = time.monotonic() + 10
    while not endpoint.bodies and time.monotonic() < deadline:
        time.sleep(0.05)
    for step in range(10, 60, 10):  # five records within well under a second: at most one more post
        reporter.record({"event": "train", "step": step, "loss": 5.0 - step / 100, "step_time_ms": 100.0})
    reporter.record({"event": "val", "step": 50, "val_loss": 4.75})
    reporter.close("finished")
    assert endpoint.problems == []
    assert 2 <= len(endpoint.bodies) <= 3 and reporter.sent == len(endpoint.bodies)
    for body in endpoint.bodies:
        assert TrainerV1alpha1UpdateTrainJobStatusRequest.from_dict(body) is not None
    last = endpoint.bodies[-1]["trainerStatus"]
    assert last["progressPercentage"] == 50 and last["estimatedRemainingSeconds"] == 5  # 50 steps x 0.1 s
    assert {m["name"]: m["value"] for m in last["metrics"]} == {
        "step": "50",
        "total_steps": "100",
        "loss": "4.5",
        "val_loss": "4.75",
    }


def test_no_endpoint_in_the_environment_means_no_reporter(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (progress.URL_ENV, progress.CA_CERT_ENV, progress.TOKEN_ENV):
        monkeypatch.delenv(name, raising=False)
    assert TrainJobStatusReporter.from_environment(10) is None
    monkeypatch.setenv(progress.URL_ENV, "https://x")
    assert TrainJobStatusReporter.from_environment(10) is None  # all three or nothing


def test_a_hanging_endpoint_never_blocks_the_caller_and_warns_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(progress, "MIN_INTERVAL_SECONDS", 0.2)
    monkeypatch.setattr(progress, "REQUEST_TIMEOUT_SECONDS", 0.5)
    cert, _ = make_certificate(tmp_path)
    token = tmp_path / "token"
    token.write_text("t")
    with (
        socket.socket() as silent
    ):  # accepts connections (the kernel does) but never answers the TLS handshake
        silent.bind(("127.0.0.1", 0))
        silent.listen(64)
        url = f"https://127.0.0.1:{silent.getsockname()[1]}{STATUS_PATH}"
        reporter = TrainJobStatusReporter(url, cert, token, max_steps=1000)
        started = time.perf_counter()
        for step in range(1, 1001):
            reporter.record({"event": "train", "step": step, "loss": 3.0, "step_time_ms": 1.0})
            if step % 100 == 0:
                time.sleep(0.3)  # several timed-out posts happen meanwhile
        calls = time.perf_counter() - started - 3.0
        reporter.close("finished")
        closed = time.perf_counter() - started - 3.0 - calls
    assert calls < 1.0  # 1000 records: no waiting on the network
    assert closed < progress.REQUEST_TIMEOUT_SECONDS + 1.5  # no final post to an endpoint that keeps failing
    warnings = [line for line in capsys.readouterr().err.splitlines() if "cannot report progress" in line]
    assert len(warnings) == 1 and "timed out" in warnings[0]
    assert reporter.sent == 0


@pytest.mark.slow
def test_a_real_training_run_reports_its_progress(endpoint: StatusEndpoint, tmp_path: Path) -> None:
    environment = {
        progress.URL_ENV: endpoint.url,
        progress.CA_CERT_ENV: str(endpoint.ca_cert),
        progress.TOKEN_ENV: str(endpoint.token),
    }
    overrides = run_overrides(tmp_path / "run", train__max_steps=60, checkpoint__every_steps=30)
    result = run(trainer_command("train", TINY_CONFIG, overrides), timeout=240, **environment)
    assert result.returncode == 0, result.stderr
    assert "cannot report progress" not in result.stderr
    assert endpoint.problems == [] and len(endpoint.bodies) >= 2  # the start, and the end at close
    for body in endpoint.bodies:
        assert TrainerV1alpha1UpdateTrainJobStatusRequest.from_dict(body) is not None
    last = endpoint.bodies[-1]["trainerStatus"]
    written = [m for m in metrics(tmp_path / "run") if m["event"] == "train"][-1]
    assert last["progressPercentage"] == 100
    values = {m["name"]: m["value"] for m in last["metrics"]}
    assert (values["step"], values["total_steps"]) == ("60", "60")
    assert float(values["loss"]) == pytest.approx(written["loss"], rel=1e-5)
