"""Time to first step in parts (docs/trainer.md, Metrics) from the kernel's start time of the process or of
`launch` (imports count), and the same instants as wall-clock times (tests/e2e/timeline.py)."""

from __future__ import annotations

import os
import time

import psutil

# `launch`'s start (epoch seconds) for its workers: the origin of their clocks
LAUNCH_START_ENV = "TRAINSTACK_LAUNCH_START"


def process_start() -> float:
    return float(psutil.Process().create_time())


class StartupClock:
    def __init__(self) -> None:
        self.origin = self.last = started = process_start()
        self.parts: dict[str, float | None] = {}
        if launched := os.environ.get(LAUNCH_START_ENV):
            try:
                self.origin = min(float(launched), started)
            except ValueError:
                pass  # not a number: from this process's own start
            else:
                self.parts["launch_s"] = round(started - self.origin, 3)
        self.marks: dict[str, float] = {"process": started}
        if self.origin < started:
            self.marks["launch"] = self.origin
        self.mark("imported")

    def lap(self, part: str) -> None:
        """Close the part that ran since the previous lap."""
        now = time.time()
        self.parts[f"{part}_s"] = round(now - self.last, 3)
        self.last = self.marks[part] = now

    def mark(self, instant: str) -> None:
        self.marks[instant] = time.time()

    def timestamps(self) -> dict[str, float]:
        """Every instant, oldest first, in epoch seconds."""
        return {name: round(at, 3) for name, at in sorted(self.marks.items(), key=lambda item: item[1])}

    def report(self) -> dict[str, float | None]:
        return {"time_to_first_step_s": round(self.last - self.origin, 3), **self.parts}


def compile_estimate(first_step_s: float | None, step_s: float | None, compiled: bool) -> float | None:
    """Seconds torch.compile added: the first step less a steady one (it also pays one-time allocations)."""
    if not compiled or first_step_s is None or step_s is None:
        return None
    return round(max(0.0, first_step_s - step_s), 3)
