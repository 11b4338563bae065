"""Why a run stops before train.max_steps: a stop signal, or train.stop_at ("val_loss<=2.5") on a metric every
rank agrees on: loss (mean over ranks, at each logged step) or val_loss (each evaluation)."""

from __future__ import annotations

import math
import operator
import re
import signal
import time
from dataclasses import dataclass
from types import FrameType

STOP_METRICS = ("loss", "val_loss")
COMPARISONS = {"<=": operator.le, ">=": operator.ge, "<": operator.lt, ">": operator.gt}
_STOP_AT = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_]*)\s*(<=|>=|<|>|==|=|!=)?\s*(.*?)\s*$")
GRAMMAR = (
    f"expected '<metric> <operator> <number>' with metric one of {', '.join(STOP_METRICS)} and operator "
    f"one of {' '.join(COMPARISONS)}, e.g. 'val_loss<=2.5'"
)


@dataclass(frozen=True)
class StopCondition:
    metric: str
    operator: str
    threshold: float

    def reached(self, value: float | None) -> bool:
        """None or NaN never does."""
        return (
            value is not None
            and math.isfinite(value)
            and bool(COMPARISONS[self.operator](value, self.threshold))
        )

    def __str__(self) -> str:
        return f"{self.metric}{self.operator}{self.threshold:g}"


def parse_stop_at(text: str) -> StopCondition:
    """train.stop_at's condition (spaces optional); ValueError saying what is allowed."""
    match = _STOP_AT.fullmatch(text)
    if match is None:
        raise ValueError(GRAMMAR)
    metric, comparison, number = match.groups()
    if metric not in STOP_METRICS:
        raise ValueError(f"unknown metric {metric!r}; the trainer computes {', '.join(STOP_METRICS)}")
    try:
        threshold = float(number)
    except ValueError:
        raise ValueError(GRAMMAR) from None
    if comparison not in COMPARISONS:
        raise ValueError(GRAMMAR)
    if not math.isfinite(threshold):
        raise ValueError("the threshold must be a finite number")
    return StopCondition(metric, comparison, threshold)


class StopSignal:
    """Remembers SIGTERM (a pod drained or preempted) and SIGINT instead of dying mid-step."""

    def __init__(self) -> None:
        self.received: str | None = None
        self.received_at: float | None = None  # seconds since the epoch, for the recovery's timeline
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._handle)

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        self.received = signal.Signals(signum).name
        self.received_at = round(time.time(), 3)
