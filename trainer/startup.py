"""Time to first step, in parts (launch_s, startup_s, data_s, engine_s, resume_s, prepare_s, first_step_s:
docs/trainer.md, Metrics), from the start of the process or of `launch`, as psutil reads the kernel's record
(so the interpreter's start and the imports count), and the same instants as wall-clock times for lining them
up with what Kubernetes saw (tests/e2e/timeline.py)."""

from __future__ import annotations

import os
import time

import psutil

# Set by `launch` for its workers: the launcher's start (seconds since the epoch), the origin of their clocks.
LAUNCH_START_ENV = "TRAINSTACK_LAUNCH_START"


def process_start() -> float:
    """When this process started, in seconds since the epoch."""
    return float(psutil.Process().create_time())


class StartupClock:
    """Laps from the process start (or the launcher's, from LAUNCH_START_ENV) to the first step."""

    def __init__(self) -> None:
        started = process_start()
        self.parts: dict[str, float | None] = {}
        launched = os.environ.get(LAUNCH_START_ENV)
        self.origin = started
        if launched:
            try:
                self.origin = min(float(launched), started)
            except ValueError:
                pass  # not a number: measure from this process's own start
            else:
                self.parts["launch_s"] = round(started - self.origin, 3)
        self.last = started
        self.marks: dict[str, float] = {"process": started}
        if self.origin < started:
            self.marks["launch"] = self.origin
        self.mark("imported")

    def lap(self, part: str) -> None:
        """Close the part that ran since the previous lap (or since the process started)."""
        now = time.time()
        self.parts[f"{part}_s"] = round(now - self.last, 3)
        self.last = now
        self.marks[part] = now

    def mark(self, instant: str) -> None:
        """Remember when `instant` happened (now) without closing a lap."""
        self.marks[instant] = time.time()

    def timestamps(self) -> dict[str, float]:
        """Every instant the clock knows, oldest first, in seconds since the epoch (millisecond precision)."""
        return {name: round(at, 3) for name, at in sorted(self.marks.items(), key=lambda item: item[1])}

    def report(self) -> dict[str, float | None]:
        """time_to_first_step_s (origin to the last lap) and every part, in seconds."""
        return {"time_to_first_step_s": round(self.last - self.origin, 3), **self.parts}


def compile_estimate(first_step_s: float | None, step_s: float | None, compiled: bool) -> float | None:
    """Seconds torch.compile added to the first step: the first step less a steady one (None when not
    compiled or either is unknown). An estimate: the first step also pays one-time allocations."""
    if not compiled or first_step_s is None or step_s is None:
        return None
    return round(max(0.0, first_step_s - step_s), 3)
