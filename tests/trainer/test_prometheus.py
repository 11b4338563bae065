"""trainer.prometheus: the /metrics endpoint, scraped over HTTP and parsed with prometheus-client's parser."""

from __future__ import annotations

import math
import signal
import socket
import subprocess
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from trainer import PREEMPTED_EXIT_CODE
from trainer.config import ConfigError
from trainer.distributed import free_port
from trainer.prometheus import PrometheusExporter

from .conftest import REPO, TINY_CONFIG, metrics, run_overrides, trainer_command, trainer_env


def scrape(port: int) -> dict[str, float]:
    """Every sample of the endpoint by name (unlabelled samples only)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as reply:
        text = reply.read().decode()
    return {
        sample.name: sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if not sample.labels
    }


def test_gauges_follow_the_records() -> None:
    exporter = PrometheusExporter(0, max_steps=200, address="127.0.0.1")  # 0: any free port
    try:
        before = scrape(exporter.port)
        assert before["trainstack_max_steps"] == 200 and before["trainstack_step"] == 0
        # Nothing measured yet reads as NaN, not as a loss or an MFU of 0.
        assert all(math.isnan(before[f"trainstack_{name}"]) for name in ("loss", "val_loss", "mfu"))
        exporter.restarts(2)
        exporter.record({"event": "train", "step": 10, "loss": 3.25, "tokens_per_sec": 1500.0, "mfu": None})
        exporter.record({"event": "val", "step": 10, "val_loss": 3.5})
        exporter.record({"event": "checkpoint", "step": 10, "path": "/x/step_000010"})
        exporter.record({"event": "train", "step": 20, "loss": 3.0, "tokens_per_sec": 1600.0, "mfu": 0.31})
        after = scrape(exporter.port)
    finally:
        exporter.close("finished")
    assert after["trainstack_step"] == 20
    assert (after["trainstack_loss"], after["trainstack_val_loss"]) == (3.0, 3.5)
    assert (after["trainstack_tokens_per_second"], after["trainstack_mfu"]) == (1600.0, 0.31)
    assert after["trainstack_restarts"] == 2 and after["trainstack_last_checkpoint_step"] == 10
    assert 0 <= after["trainstack_seconds_since_last_checkpoint"] < 60
    assert after["process_resident_memory_bytes"] > 0  # prometheus-client's process collector


def test_a_resumed_checkpoint_ages_from_when_it_was_written() -> None:
    exporter = PrometheusExporter(0, max_steps=10, address="127.0.0.1")
    try:
        exporter.checkpointed(40, time.time() - 3600)  # resumed from a checkpoint written an hour ago
        age = scrape(exporter.port)["trainstack_seconds_since_last_checkpoint"]
    finally:
        exporter.close("finished")
    assert 3600 <= age < 3700


def test_a_port_in_use_is_a_config_error() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(
            ConfigError, match=rf"output\.metrics_port: cannot serve /metrics on 127\.0\.0\.1:{port}"
        ):
            PrometheusExporter(port, max_steps=10, address="127.0.0.1")


def scrape_when(
    port: int, process: subprocess.Popen[str], ready: Callable[[dict[str, float]], bool]
) -> dict[str, float]:
    """Scrapes until ready(samples) (the endpoint may not be up yet); fails if the process ends first."""
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if process.poll() is not None:
            _, err = process.communicate()
            pytest.fail(
                f"the run exited ({process.returncode}) before its metrics were ready:\n{err[-3000:]}"
            )
        try:
            samples = scrape(port)
        except OSError:
            samples = {}
        if samples and ready(samples):
            return samples
        time.sleep(0.2)
    process.kill()
    pytest.fail("the metrics did not get ready within 300 s")


@pytest.mark.slow
def test_scrape_a_real_training_run_and_its_restart(tmp_path: Path) -> None:
    port = free_port()
    args = trainer_command(
        "train",
        TINY_CONFIG,
        run_overrides(tmp_path, train__max_steps=5000, checkpoint__every_steps=10, output__metrics_port=port),
    )

    def start() -> subprocess.Popen[str]:
        return subprocess.Popen(args, cwd=REPO, env=trainer_env(), text=True,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip

    first = start()
    samples = scrape_when(
        port, first, lambda s: s["trainstack_step"] >= 20 and s["trainstack_last_checkpoint_step"] >= 10
    )
    first.send_signal(signal.SIGTERM)
    first.communicate(timeout=120)
    assert first.returncode == PREEMPTED_EXIT_CODE
    assert samples["trainstack_max_steps"] == 5000 and samples["trainstack_restarts"] == 0
    assert 0 < samples["trainstack_loss"] < 5.6  # below ln(257), the loss of a uniform guess over the bytes
    assert samples["trainstack_tokens_per_second"] > 0
    assert math.isnan(samples["trainstack_mfu"])  # a CPU has no peak FLOP/s to compare with
    assert 0 <= samples["trainstack_seconds_since_last_checkpoint"] < 120
    stopped_at = next(m["step"] for m in metrics(tmp_path) if m["event"] == "preempted")

    second = start()  # the restarted run: resumed from the checkpoint the first one saved on SIGTERM
    resumed = scrape_when(port, second, lambda s: s["trainstack_step"] > stopped_at)
    second.send_signal(signal.SIGTERM)
    second.communicate(timeout=120)
    assert resumed["trainstack_restarts"] == 1
    assert resumed["trainstack_last_checkpoint_step"] >= stopped_at
