"""A checkpoint saved at ZeRO stage 0 and an engine at stage >= 1 (or the reverse) cannot be loaded into each
other by DeepSpeed; since one rank runs stage 0 (trainer.engine.zero_stage), a resize between one rank and
several can be such a change. The trainer stops with one line (exit 2) instead of DeepSpeed's traceback."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from trainer.train import saved_zero_stage

from .conftest import TINY_CONFIG, run, run_overrides, torchrun_command, trainer_command


def test_the_saved_stage_comes_from_the_manifest() -> None:
    assert saved_zero_stage({"zero_stage": 2, "files": {}}) == 2
    assert (
        saved_zero_stage({"zero_stage": 0, "files": {"zero_pp_rank_0_mp_rank_00_optim_states.pt": {}}}) == 0
    )


def test_a_manifest_from_before_the_field_tells_zero_0_from_zero_partitions() -> None:
    zero: dict[str, Any] = {
        "files": {"mp_rank_00_model_states.pt": {}, "zero_pp_rank_0_mp_rank_00_optim_states.pt": {}}
    }
    assert saved_zero_stage(zero) == 1
    assert saved_zero_stage({"files": {"mp_rank_00_model_states.pt": {}, "rng_rank00000.pt": {}}}) == 0
    assert saved_zero_stage({}) is None


@pytest.mark.slow
def test_a_zero_1_checkpoint_of_two_ranks_stops_one_rank_with_one_line(tmp_path: Path) -> None:
    settings = {"train__max_steps": 4, "checkpoint__every_steps": 2, "train__zero_stage": 1}
    saved = run(torchrun_command(2, TINY_CONFIG, run_overrides(tmp_path, **settings)))
    assert saved.returncode == 0, saved.stderr[-3000:]
    resumed = run(
        trainer_command("train", TINY_CONFIG, run_overrides(tmp_path, **{**settings, "train__max_steps": 6}))
    )
    assert resumed.returncode == 2, resumed.stderr[-3000:]
    assert "Traceback" not in resumed.stderr
    errors = [line for line in resumed.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, resumed.stderr
    for fragment in ["checkpoint.dir:", "step_000004 was saved at ZeRO stage 1 by 2 rank(s)",
                     "this run (1 rank(s)) runs ZeRO stage 0", "resume with 2 or more ranks"]:  # fmt: skip
        assert fragment in errors[0]
