"""trainer.metrics and trainer.plot: MFU against a real peak or none, JSON lines, the loss plot."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

from trainer.config import ConfigError
from trainer.metrics import MetricsLog, mfu, peak_flops
from trainer.plot import plot_loss, read_series

from .conftest import REPO


def test_peak_flops_by_device_name() -> None:
    assert peak_flops("NVIDIA H100 80GB HBM3", None) == 989e12
    assert peak_flops("NVIDIA H100 PCIe", None) == 756e12
    assert peak_flops("NVIDIA A100-SXM4-80GB", None) == 312e12
    assert peak_flops("cpu", None) is None  # no made-up CPU figure
    assert peak_flops("cpu", 2.5) == 2.5e12  # unless the config gives one


def test_mfu_matches_the_published_formula() -> None:
    # MFU = tokens/s x training FLOPs per token / (devices x peak FLOP/s) (PaLM appendix B; nanoGPT's
    # estimate_mfu). 8 A100s (312 TFLOP/s bf16) at 208,000 tokens/s with 6e9 FLOPs per token (a 1B-parameter
    # model, attention left out): 208e3 x 6e9 / (8 x 312e12) = 1.248e15 / 2.496e15 = 0.5.
    assert mfu(208_000, 6_000_000_000, 312e12, 8) == pytest.approx(0.5)
    assert mfu(26_000, 6_000_000_000, 312e12, 1) == pytest.approx(0.5)
    assert mfu(1000.0, 6_000_000_000, None, 1) is None


def test_records_go_to_stdout_and_jsonl(tmp_path: Path) -> None:
    stream = io.StringIO()
    log = MetricsLog(str(tmp_path), show_progress=False, max_steps=10, stream=stream)
    log.record(event="train", step=1, loss=2.5, mfu=None, grad_norm=float("nan"))
    log.summary(final_step=1, final_loss=2.5, val_loss=2.6, tokens_per_sec=10.0)
    line = {"event": "train", "step": 1, "loss": 2.5, "mfu": None, "grad_norm": None}
    assert json.loads(stream.getvalue()) == line
    assert json.loads((tmp_path / "metrics.jsonl").read_text()) == line
    assert json.loads((tmp_path / "summary.json").read_text())["val_loss"] == 2.6


def test_two_writers_of_one_summary_each_leave_it_whole(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two runs sharing output.dir finish at the same moment: both renames happen together (a barrier in
    os.replace). A temporary name shared by the writers made the second rename fail (FileNotFoundError)."""
    barrier, real_replace = threading.Barrier(2, timeout=10), os.replace

    def replace_together(source: Any, target: Any) -> None:
        barrier.wait()
        real_replace(source, target)

    monkeypatch.setattr(os, "replace", replace_together)
    logs = [MetricsLog(str(tmp_path), False, 10, stream=io.StringIO()) for _ in range(2)]
    errors: list[BaseException] = []

    def finish(index: int) -> None:
        try:
            logs[index].summary(final_step=index, val_loss=0.5 + index)
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=finish, args=(index,)) for index in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary == {"final_step": summary["final_step"], "val_loss": 0.5 + summary["final_step"]}
    assert [p.name for p in tmp_path.iterdir()] == ["summary.json"]  # no temporary left


def test_progress_bar_is_redrawn_in_place(tmp_path: Path) -> None:
    stream = io.StringIO()
    log = MetricsLog(str(tmp_path), show_progress=True, max_steps=10, stream=stream)
    log.record(event="train", step=5, loss=1.25)
    log.progress(5, 1.25)
    # the first draw has no pace yet (no ETA); the rest of the line is cleared (an ETA shortens)
    assert stream.getvalue().endswith("\r[###############---------------] 5/10 loss 1.2500\033[K")


def write_metrics(tmp_path: Path) -> Path:
    metrics = tmp_path / "metrics.jsonl"
    records = [{"event": "start", "step": 0}, *({"event": "train", "step": s, "loss": 5.0 / s} for s in range(1, 20)),
               {"event": "val", "step": 10, "val_loss": 0.6}, {"event": "train", "step": 19, "loss": 0.2}]  # fmt: skip
    metrics.write_text("".join(json.dumps(r) + "\n" for r in records))
    return metrics


def test_plot_series_count_a_resumed_step_once(tmp_path: Path) -> None:
    train, val = read_series(write_metrics(tmp_path))
    assert train[-1] == (19, 0.2) and len(train) == 19  # a step logged again after a resume counts once
    assert val == [(10, 0.6)]


@pytest.mark.slow  # `python -m trainer plot` (matplotlib) in a subprocess: about 6 s
def test_plot_writes_png(tmp_path: Path) -> None:
    metrics = write_metrics(tmp_path)
    out = tmp_path / "loss.png"
    result = subprocess.run([sys.executable, "-m", "trainer", "plot", "--metrics", str(metrics), "--out", str(out)],
                            cwd=REPO, capture_output=True, text=True)  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_plot_refuses_a_format_matplotlib_cannot_write_and_writes_exactly_the_name_given(
    tmp_path: Path,
) -> None:
    """--out x.txt was matplotlib's ValueError traceback; --out noext wrote noext.png but said noext."""
    metrics = write_metrics(tmp_path)
    with pytest.raises(ConfigError, match=r"^--out: matplotlib cannot write \.txt; allowed: .*png"):
        plot_loss(metrics, tmp_path / "loss.txt")
    assert not (tmp_path / "loss.txt").exists()
    plot_loss(metrics, tmp_path / "noext")
    assert (tmp_path / "noext").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and not (
        tmp_path / "noext.png"
    ).exists()


def test_plot_without_records(tmp_path: Path) -> None:
    (tmp_path / "m.jsonl").write_text('{"event": "start"}\n')
    with pytest.raises(ConfigError, match="holds no training loss records"):
        read_series(tmp_path / "m.jsonl")
