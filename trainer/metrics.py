"""Training metrics: JSON lines, model FLOPs utilisation, a terminal progress bar, the run summary, and the
sinks that pass every record on (MLflow, Prometheus, the TrainJob's status)."""

from __future__ import annotations

import json
import math
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Literal, Protocol, TextIO

from trainer.shared_files import append_line, write_replacing

# how the process ends, as its sinks are told: trained (to max_steps or stop_at), preempted (exit 75), error
Outcome = Literal["finished", "preempted", "failed"]

# Dense bf16 peak TFLOP/s from NVIDIA's datasheets; the first substring of the device name wins ("H100": SXM).
BF16_PEAK_TFLOPS: list[tuple[str, float]] = [
    ("H100 PCIe", 756.0), ("H100 NVL", 835.0), ("H100", 989.0), ("H200", 989.0), ("GH200", 989.0),
    ("B200", 2250.0), ("A100", 312.0), ("L40S", 362.0), ("L4", 121.0), ("A10", 125.0),
]  # fmt: skip


def peak_flops(device_name: str, configured_tflops: float | None) -> float | None:
    """output.peak_tflops, else the table's; None (CPU, unknown GPU): MFU is null rather than guessed."""
    if configured_tflops is not None:
        return configured_tflops * 1e12
    for fragment, tflops in BF16_PEAK_TFLOPS:
        if fragment in device_name:
            return tflops * 1e12
    return None


def mfu(
    tokens_per_sec: float, flops_per_token: int, peak_per_device: float | None, devices: int
) -> float | None:
    """Achieved model FLOP/s over the peak of all devices (nanoGPT's estimate_mfu, per token)."""
    return None if peak_per_device is None else tokens_per_sec * flops_per_token / (peak_per_device * devices)


def warn(message: str) -> None:
    print(f"warning: {message}", file=sys.stderr, flush=True)


def clean(fields: Mapping[str, Any]) -> dict[str, Any]:
    """JSON has no NaN or infinity: null."""
    return {k: None if isinstance(v, float) and not math.isfinite(v) else v for k, v in fields.items()}


class ProgressBar:
    """A one-line bar redrawn in place; only for a terminal (it would litter a log file)."""

    def __init__(
        self, total: int, stream: TextIO, width: int = 30, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.total, self.stream, self.width, self.clock = total, stream, width, clock
        self.first: tuple[int, float] | None = None  # (step, time) of the first draw: the pace since

    def eta(self, step: int) -> str:
        """' eta 1m05s' at the pace since the first draw (this process's steps only), or '' before it is known."""
        now = self.clock()
        if self.first is None:
            self.first = (step, now)
            return ""
        steps, seconds = step - self.first[0], now - self.first[1]
        if steps <= 0 or step >= self.total:
            return ""
        return f" eta {duration(seconds / steps * (self.total - step))}"

    def draw(self, step: int, loss: float | None) -> None:
        filled = self.width * min(step, self.total) // self.total
        loss_text = f" loss {loss:.4f}" if loss is not None else ""
        bar = "#" * filled + "-" * (self.width - filled)
        self.stream.write(f"\r[{bar}] {step}/{self.total}{loss_text}{self.eta(step)}\033[K")
        self.stream.flush()

    def clear(self) -> None:
        self.stream.write("\r\033[K")
        self.stream.flush()


class MetricsSink(Protocol):
    """Somewhere rank 0's records also go; it never raises into training nor blocks it (slow work on its thread)."""

    def record(self, fields: Mapping[str, Any]) -> None:
        """One metrics.jsonl record (NaN and infinity already None)."""

    def summary(self, fields: Mapping[str, Any]) -> None:
        """summary.json, once, at the end of a finished run."""

    def close(self, outcome: Outcome) -> None:
        """The process is ending; flush what is pending (bounded in time)."""


class MetricsLog:
    """Rank 0's metrics: each record one JSON line on stdout and in output.dir/metrics.jsonl, then to each sink."""

    def __init__(
        self, output_dir: str, show_progress: bool, max_steps: int, stream: TextIO = sys.stdout
    ) -> None:
        self.dir = Path(output_dir).expanduser()
        self.dir.mkdir(parents=True, exist_ok=True)
        self.stream = stream
        self.path = self.dir / "metrics.jsonl"  # appended to across resumes
        self.bar = ProgressBar(max_steps, stream) if show_progress else None
        self.sinks: list[MetricsSink] = []  # added once the run's start step is known (Trainer.start_sinks)

    def record(self, **fields: Any) -> None:
        cleaned = clean(fields)
        line = json.dumps(cleaned)
        if self.bar:
            self.bar.clear()
        self.stream.write(line + "\n")
        self.stream.flush()
        append_line(self.path, line)  # whole lines even if two runs share output.dir (see shared_files)
        for sink in self.sinks:
            sink.record(cleaned)

    def progress(self, step: int, loss: float | None) -> None:
        if self.bar:
            self.bar.draw(step, loss)

    def summary(self, **fields: Any) -> None:
        if self.bar:
            self.bar.clear()
        cleaned = clean(fields)
        write_replacing(self.dir / "summary.json", (json.dumps(cleaned, indent=2) + "\n").encode("utf-8"))
        for sink in self.sinks:
            sink.summary(cleaned)

    def close(self, outcome: Outcome) -> None:
        for sink in self.sinks:
            sink.close(outcome)


def duration(seconds: float) -> str:
    """12.3 s, 4m05s, 2h03m."""
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"
