"""`python -m trainer plot`: the loss curves of a run's metrics.jsonl as a PNG."""

from __future__ import annotations

import json
from pathlib import Path

from trainer.config import ConfigError


def read_series(metrics_path: Path) -> tuple[list[tuple[int, float]], list[tuple[int, float]]]:
    """(step, loss) and (step, val_loss); a step's last value wins (a resumed run appends steps again)."""
    try:
        lines = metrics_path.read_text(encoding="utf-8").splitlines()
    except OSError as error:
        raise ConfigError(f"--metrics: cannot read {metrics_path}: {error.strerror}") from None
    train, val = [], []
    for number, line in enumerate(lines, start=1):
        try:
            record = json.loads(line)
        except ValueError:
            raise ConfigError(f"--metrics: {metrics_path} line {number} is not JSON") from None
        if record.get("event") == "train" and record.get("loss") is not None:
            train.append((record["step"], record["loss"]))
        elif record.get("event") == "val" and record.get("val_loss") is not None:
            val.append((record["step"], record["val_loss"]))
    if not train:
        raise ConfigError(f"--metrics: {metrics_path} holds no training loss records")
    return sorted(dict(train).items()), sorted(dict(val).items())


def plot_loss(metrics_path: Path, out_path: Path) -> None:
    train, val = read_series(metrics_path)
    try:
        import matplotlib

        matplotlib.use("Agg")  # files only, no display
        import matplotlib.pyplot as plt
    except ImportError:
        raise ConfigError("plot needs matplotlib: pip install matplotlib") from None
    figure, axes = plt.subplots(figsize=(8, 5))
    written = out_path.suffix.lstrip(".").lower() or "png"  # no suffix: a PNG under exactly that name
    if written not in (formats := figure.canvas.get_supported_filetypes()):
        plt.close(figure)
        raise ConfigError(f"--out: matplotlib cannot write .{written}; allowed: {', '.join(sorted(formats))}")
    axes.plot(*zip(*train, strict=True), label="train loss")
    if val:
        axes.plot(*zip(*val, strict=True), marker="o", label="validation loss")
    axes.set(xlabel="step", ylabel="cross-entropy (nats/token)", title=str(metrics_path))
    axes.grid(alpha=0.3)
    axes.legend()
    out_path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(out_path, dpi=120, bbox_inches="tight", format=written)
    plt.close(figure)
