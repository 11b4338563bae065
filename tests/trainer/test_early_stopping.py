"""train.stop_at: a run that reaches its threshold ends successfully, checkpointed, with the reason in its
summary, and stays finished when run again; also a real run's reports to a TrainJob status endpoint that is
not there (training must not notice)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from trainer.distributed import free_port

from .conftest import TINY_CONFIG, metrics, run, run_overrides, trainer_command

pytestmark = pytest.mark.slow
# The tiny model's loss starts near ln(257) = 5.55 and passes 3.5 within the first few dozen steps.
THRESHOLD = "loss<=3.5"


def test_stop_at_ends_the_run_with_a_checkpoint_and_the_reason(tmp_path: Path) -> None:
    settings = {"train__max_steps": 400, "checkpoint__every_steps": 1000, "train__stop_at": THRESHOLD}
    args = trainer_command("train", TINY_CONFIG, run_overrides(tmp_path, **settings))
    unreachable = {  # as Trainer injects them, pointing at a port where nothing listens
        "KUBEFLOW_TRAINER_SERVER_URL": f"https://127.0.0.1:{free_port()}/apis/trainer.kubeflow.org/v1alpha1/namespaces/a/trainjobs/b/status",
        "KUBEFLOW_TRAINER_SERVER_CA_CERT": str(tmp_path / "ca.crt"),
        "KUBEFLOW_TRAINER_SERVER_TOKEN": str(tmp_path / "token"),
    }
    result = run(args, timeout=240, **unreachable)
    assert result.returncode == 0, result.stderr
    assert sum("cannot report progress" in line for line in result.stderr.splitlines()) == 1

    records = metrics(tmp_path)
    losses = {r["step"]: r["loss"] for r in records if r["event"] == "train"}
    first_below = min(step for step, loss in losses.items() if loss <= 3.5)
    assert max(losses) == first_below < 400  # stopped at the first logged step that met the threshold
    assert all(loss > 3.5 for step, loss in losses.items() if step < first_below)
    stop = next(r for r in records if r["event"] == "stop_at")
    assert stop["step"] == first_below and f"train.stop_at {THRESHOLD} reached" in stop["reason"]
    summary = json.loads((tmp_path / "output" / "summary.json").read_text())
    assert summary["final_step"] == first_below and summary["stop_reason"] == stop["reason"]
    # checkpoint.every_steps is 1000: this checkpoint exists only because the run stopped there.
    assert (tmp_path / "checkpoints" / f"step_{first_below:06d}" / "manifest.json").is_file()

    again = run(args)  # the same command again: already done, nothing trained
    assert again.returncode == 0, again.stderr
    new_records = metrics(tmp_path)[len(records) :]
    assert [r["event"] for r in new_records] == ["start", "val"]
    assert json.loads((tmp_path / "output" / "summary.json").read_text())["stop_reason"] == stop["reason"]

    # A stricter threshold is another target: the run trains on from its checkpoint.
    stricter = run_overrides(
        tmp_path, **{**settings, "train__max_steps": first_below + 10, "train__stop_at": "loss<=0.1"}
    )
    resumed = run(trainer_command("train", TINY_CONFIG, stricter))
    assert resumed.returncode == 0, resumed.stderr
    final = json.loads((tmp_path / "output" / "summary.json").read_text())
    assert final["final_step"] == first_below + 10
    assert final["stop_reason"] == f"train.max_steps ({first_below + 10}) reached"
