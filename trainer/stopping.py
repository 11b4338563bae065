"""train.stop_at, early stopping's condition: "<metric> <operator> <number>", e.g. "val_loss<=2.5". Only metrics
every rank agrees on: loss (the step's training loss averaged over ranks, at each logged step) and val_loss."""

from __future__ import annotations

import math
import operator
import re
from dataclasses import dataclass

STOP_METRICS = ("loss", "val_loss")
COMPARISONS = {"<=": operator.le, ">=": operator.ge, "<": operator.lt, ">": operator.gt}
_STOP_AT = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_]*)\s*(<=|>=|<|>|==|=|!=)?\s*(.*?)\s*$")
GRAMMAR = (
    f"expected '<metric> <operator> <number>' with metric one of {', '.join(STOP_METRICS)} and operator "
    f"one of {' '.join(COMPARISONS)}, e.g. 'val_loss<=2.5'"
)


@dataclass(frozen=True)
class StopCondition:
    """Stop when `metric operator threshold` holds (e.g. val_loss <= 2.5)."""

    metric: str
    operator: str
    threshold: float

    def reached(self, value: float | None) -> bool:
        """Whether a measured value meets the condition; None or NaN never does."""
        if value is None or not math.isfinite(value):
            return False
        return bool(COMPARISONS[self.operator](value, self.threshold))

    def __str__(self) -> str:
        return f"{self.metric}{self.operator}{self.threshold:g}"


def parse_stop_at(text: str) -> StopCondition:
    """The condition a train.stop_at text states (spaces optional); ValueError saying what is allowed."""
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
