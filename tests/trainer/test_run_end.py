"""How a run ends and resumes, as a person at the terminal sees it (issue 25 cases 4-7): a plain closing line
(also after a stop signal, and when there is nothing to train), the LR schedule kept when train.max_steps is
raised, damaged checkpoints never silently thrown away, one CPU thread by default."""

from __future__ import annotations

import io
import json
import subprocess
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import torch

from trainer import PREEMPTED_EXIT_CODE
from trainer.config import load_config
from trainer.engine import Schedule
from trainer.launch import relay_stderr
from trainer.metrics import ProgressBar, duration
from trainer.train import Trainer

from .conftest import (
    REPO,
    TINY_CONFIG,
    metrics,
    run,
    run_overrides,
    stop_when,
    trainer_command,
    trainer_env,
)

SETTINGS = {"train__max_steps": 30, "checkpoint__every_steps": 10, "output__log_every": 5}
MIN_LR = 3.0e-4  # tiny.yaml's train.min_lr


def closing_line(
    capsys: pytest.CaptureFixture[str], outcome: str, step: int, seconds: float, **fields: Any
) -> str:
    """Trainer.close_with's line for a run of 200 steps from step 0 that has taken `seconds` so far."""
    trainer: Any = object.__new__(Trainer)  # only what close_with reads
    trainer.config = load_config(TINY_CONFIG, ["train.max_steps=200", "checkpoint.dir=runs/c"])
    trainer.step, trainer.last_loss, trainer.stop_reason = step, fields.pop("loss"), None
    trainer.clock = SimpleNamespace(origin=time.time() - seconds)
    trainer.log = SimpleNamespace(path=Path("runs/o/metrics.jsonl"))
    trainer.close_with(outcome, 0, **fields)
    return capsys.readouterr().err.rstrip("\n")


def test_closing_lines(capsys: pytest.CaptureFixture[str]) -> None:
    done = closing_line(capsys, "finished", 200, 12.34, loss=2.5, val_loss=2.61, tokens_per_sec=5123.4)
    assert done == (
        "done: trained steps 0→200 of 200 in 12.3 s, 5,123 tokens/s; loss 2.5000, val_loss 2.6100; checkpoints in"
        " runs/c (newest step_000200); metrics in runs/o/metrics.jsonl (the curve: python -m trainer plot"
        " --metrics runs/o/metrics.jsonl --out loss.png)"
    )
    stopped = closing_line(capsys, "SIGINT", 57, 75, loss=3.0, tokens_per_sec=None)
    assert stopped.startswith(
        "stopped by SIGINT at step 57 of 200 after 1m15s; loss 3.0000; checkpoints in runs/c (newest step_000057)"
    )
    assert stopped.endswith("run the same command again to resume")
    assert duration(7384) == "2h03m"


@pytest.mark.slow
def test_a_run_ends_with_a_closing_line_and_nothing_to_do_says_so(tmp_path: Path) -> None:
    overrides = run_overrides(tmp_path, **SETTINGS)
    first = run(trainer_command("train", TINY_CONFIG, overrides))
    assert first.returncode == 0, first.stderr
    last = first.stderr.splitlines()[-1]
    assert last.startswith("done: trained steps 0→30 of 30 in "), first.stderr
    assert f"checkpoints in {tmp_path}/checkpoints (newest step_000030)" in last
    assert f"metrics in {tmp_path}/output/metrics.jsonl" in last

    again = run(trainer_command("train", TINY_CONFIG, [*overrides, "--set", "train.max_steps=20"]))
    assert again.returncode == 0, again.stderr
    assert again.stderr.splitlines() == [
        next(line for line in again.stderr.splitlines() if line.startswith("nothing to train: "))
    ]
    assert again.stderr.startswith(
        "nothing to train: resumed at step 30 and train.max_steps (20) was already reached; raise train.max_steps"
    )


@pytest.mark.slow
def test_a_signal_stop_ends_with_a_closing_line(tmp_path: Path) -> None:
    args = trainer_command(
        "train", TINY_CONFIG, run_overrides(tmp_path, **{**SETTINGS, "train__max_steps": 5000})
    )
    process = subprocess.Popen(args, cwd=REPO, env=trainer_env(), text=True,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip
    code, _, err = stop_when(process, tmp_path / "checkpoints" / "step_000010")
    assert code == PREEMPTED_EXIT_CODE, err
    assert "Traceback" not in err
    assert err.splitlines()[-1].startswith("stopped by SIGTERM at step "), err
    assert err.splitlines()[-1].endswith("run the same command again to resume")


@pytest.mark.slow
def test_raising_max_steps_keeps_the_schedule_the_run_started_with(tmp_path: Path) -> None:
    overrides = run_overrides(tmp_path, **SETTINGS)
    assert run(trainer_command("train", TINY_CONFIG, overrides)).returncode == 0
    extended = run(trainer_command("train", TINY_CONFIG, [*overrides, "--set", "train.max_steps=50"]))
    assert extended.returncode == 0, extended.stderr
    assert (
        "note: train.max_steps is 50; the LR schedule keeps the 30 steps this run started with"
        in extended.stderr
    )
    lrs = {m["step"]: m["lr"] for m in metrics(tmp_path) if m["event"] == "train"}
    assert lrs[30] > MIN_LR  # the last step before the end of the cosine
    assert all(lrs[step] == pytest.approx(MIN_LR) for step in (35, 40, 45, 50)), lrs  # no jump back up


@pytest.mark.slow
def test_when_every_checkpoint_is_damaged_the_run_stops_unless_told_to_restart(tmp_path: Path) -> None:
    overrides = run_overrides(tmp_path, **{**SETTINGS, "train__max_steps": 20})
    assert run(trainer_command("train", TINY_CONFIG, overrides)).returncode == 0
    for shard in (tmp_path / "checkpoints").glob("step_*/shard_00000.pt"):
        shard.write_bytes(b"damaged")
    before = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
    stopped = run(trainer_command("train", TINY_CONFIG, overrides))
    assert stopped.returncode == 2, stopped.stderr
    errors = [
        line for line in stopped.stderr.splitlines() if not line.startswith("warning: skipping checkpoint")
    ]
    assert errors == [
        f"error: checkpoint.dir: none of the 2 checkpoint(s) in {tmp_path}/checkpoints can be resumed (each is"
        " named above); move them away, or set checkpoint.on_unreadable=restart to train from step 0"
    ]
    assert "Traceback" not in stopped.stderr
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == before  # nothing touched

    restarted = run(
        trainer_command("train", TINY_CONFIG, [*overrides, "--set", "checkpoint.on_unreadable=restart"])
    )
    assert restarted.returncode == 0, restarted.stderr
    start = next(m for m in metrics(tmp_path) if m["event"] == "start" and m["resumed_from"] is None)
    assert start["step"] == 0


@pytest.mark.slow
@pytest.mark.parametrize(("omp", "threads"), [(None, 1), ("2", 2)])
def test_a_single_cpu_process_runs_one_thread_unless_told(
    tmp_path: Path, omp: str | None, threads: int
) -> None:
    env = trainer_env()
    env.pop("OMP_NUM_THREADS")
    if omp is not None:
        env["OMP_NUM_THREADS"] = omp
    args = trainer_command("train", TINY_CONFIG, run_overrides(tmp_path, train__max_steps=1))
    result = subprocess.run(args, cwd=REPO, env=env, capture_output=True, text=True, timeout=240)
    assert result.returncode == 0, result.stderr
    start = next(json.loads(line) for line in result.stdout.splitlines() if '"event": "start"' in line)
    assert start["threads"] == threads  # torch's own default is one per core


def test_the_progress_bar_shows_the_time_left() -> None:
    stream, now = io.StringIO(), [100.0]
    bar = ProgressBar(200, stream, width=10, clock=lambda: now[0])
    bar.draw(50, None)  # resumed at 50: the pace starts here
    now[0] += 15.0
    bar.draw(80, 2.5)
    assert stream.getvalue().split("\r")[-1] == "[####------] 80/200 loss 2.5000 eta 1m00s\033[K"
    now[0] += 1.0
    bar.draw(200, 2.0)
    assert "eta" not in stream.getvalue().split("\r")[-1]


def test_the_schedule_shape_is_part_of_the_schedulers_state() -> None:
    """What a checkpoint keeps (trainer.engine_state saves lr_scheduler.state_dict()): a resumed run's
    LambdaLR gets the shape it started with whatever the new config says."""
    weight = torch.nn.Parameter(torch.zeros(1))
    saved = torch.optim.lr_scheduler.LambdaLR(torch.optim.AdamW([weight], lr=3e-3), Schedule(20, 200, 0.1))
    resumed = torch.optim.lr_scheduler.LambdaLR(torch.optim.AdamW([weight], lr=1e-3), Schedule(5, 500, 0.5))
    resumed.load_state_dict(saved.state_dict())
    shape = resumed.lr_lambdas[0]
    assert isinstance(shape, Schedule) and (shape.warmup_steps, shape.horizon, shape.min_ratio) == (
        20,
        200,
        0.1,
    )
    assert resumed.base_lrs == [3e-3]


TORCHRUN_TRACEBACK = """Traceback (most recent call last):
  File "<frozen runpy>", line 198, in _run_module_as_main
  File "/venv/lib/python3.11/site-packages/torch/distributed/elastic/multiprocessing/api.py", line 86, in _terminate_process_handler
    raise SignalException(f"Process {os.getpid()} got signal: {sigval}", sigval=sigval)
torch.distributed.elastic.multiprocessing.api.SignalException: Process 10588 got signal: 15
"""


def test_the_launcher_leaves_out_torchruns_traceback_for_its_stop_signal_only() -> None:
    other = 'Traceback (most recent call last):\n  File "x.py", line 1, in <module>\nValueError: real\n'
    source = io.StringIO(
        "W... Received 15 death signal\nstopped by SIGTERM at step 20\n" + TORCHRUN_TRACEBACK + other
    )
    sink = io.StringIO()
    relay_stderr(source, sink)
    assert sink.getvalue() == "W... Received 15 death signal\nstopped by SIGTERM at step 20\n" + other


@pytest.mark.slow
def test_sigterm_under_launch_ends_with_the_closing_line_and_no_traceback(tmp_path: Path) -> None:
    args = trainer_command(
        "launch", TINY_CONFIG, run_overrides(tmp_path, **{**SETTINGS, "train__max_steps": 5000})
    )
    process = subprocess.Popen(args, cwd=REPO, env=trainer_env(PET_NPROC_PER_NODE="1"), text=True,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip
    code, _, err = stop_when(process, tmp_path / "checkpoints" / "step_000010")
    assert code == PREEMPTED_EXIT_CODE, err
    assert "Traceback" not in err and "SignalException" not in err, err
    assert err.splitlines()[-1].startswith("stopped by SIGTERM at step "), err
