"""The DeepSpeed engine's configuration by precision and ZeRO stage, and one CPU run per path: which
optimizer DeepSpeed ends up with, one LR-schedule step per optimizer step under gradient accumulation,
the gradient norm, no per-micro-batch device syncs from DeepSpeed's throughput timer."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from trainer.config import TrainConfig, load_config
from trainer.engine import clips_itself, compile_problem, deepspeed_config

from .conftest import REPO, trainer_env

BASE = ["model.preset=tiny", "data.path=x", "train.max_steps=10", "checkpoint.dir=x",
        "checkpoint.every_steps=1", "output.dir=x"]  # fmt: skip

PROBE = """
import json, sys, torch
from trainer.config import TrainConfig, load_config
from trainer.distributed import init_distributed, shutdown
from trainer.engine import build_engine, model_config
from trainer.model import GPT
context = init_distributed()
config = load_config(None, sys.argv[1:])
torch.manual_seed(0)
model = GPT(model_config(config, 100))
engine = build_engine(model, config, context.device, 1)
ds = engine.engine
batches = [(torch.randint(0, 100, (2, 32)),) * 2 for _ in range(config.train.grad_accum_steps)]
norms = [float(engine.train_step(batches)[1]) for _ in range(3)]
print(json.dumps({"optimizer": type(ds.optimizer).__name__, "param_dtype": str(next(model.parameters()).dtype),
                  "timer": ds.tput_timer.config.enabled, "schedule_steps": ds.lr_scheduler.last_epoch,
                  "global_steps": ds.global_steps, "norms": norms, "clip": engine.clip_norm}))
ds.destroy()
del engine, ds, model
shutdown(context)
"""


def config_for(*overrides: str) -> TrainConfig:
    return load_config(None, [*BASE, *overrides])


@pytest.mark.parametrize("stage", [0, 1, 2, 3])
def test_bf16_is_torch_autocast_without_zero_and_deepspeed_bf16_with_it(stage: int) -> None:
    config = config_for(f"train.zero_stage={stage}", "train.grad_clip=0.5")
    ds = deepspeed_config(config, world_size=1, bf16=True)
    assert ds["bf16"]["enabled"] is (stage > 0)
    assert ds["torch_autocast"] == {"enabled": stage == 0, "dtype": "bfloat16"}
    assert clips_itself(config) is (stage == 0)
    assert ds["gradient_clipping"] == (0.0 if stage == 0 else 0.5)
    assert ds["timers"] == {"throughput": {"enabled": False}}


def test_fp32_enables_neither_bf16_nor_autocast() -> None:
    ds = deepspeed_config(config_for("train.zero_stage=2"), world_size=2, bf16=False)
    assert not ds["bf16"]["enabled"] and not ds["torch_autocast"]["enabled"]
    assert ds["train_batch_size"] == 2 * 8


def test_compile_needs_a_c_compiler(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CC", "/usr/bin/cc")
    assert compile_problem() is None
    monkeypatch.delenv("CC")
    monkeypatch.setenv("PATH", "/nonexistent")
    assert "C compiler" in (compile_problem() or "")


@pytest.mark.slow  # DeepSpeed in a subprocess: 30-45 s each on 2 cores
@pytest.mark.parametrize(
    ("stage", "optimizer", "dtype"),
    [(0, "AdamW", "torch.float32"), (1, "DeepSpeedZeroOptimizer", "torch.bfloat16")],
)
def test_bf16_run_on_cpu(stage: int, optimizer: str, dtype: str) -> None:
    overrides = [*BASE, "model.block_size=32", "train.micro_batch_size=2", "train.grad_accum_steps=3",
                 f"train.zero_stage={stage}", "train.precision=bf16"]  # fmt: skip
    result = subprocess.run(
        [sys.executable, "-c", PROBE, *overrides],
        cwd=REPO, env=trainer_env(), capture_output=True, text=True, timeout=240,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    probe = json.loads(result.stdout.strip().splitlines()[-1])
    assert probe["optimizer"] == optimizer  # ZeRO 0: the client fused AdamW itself, no per-tensor wrapper
    assert probe["param_dtype"] == dtype
    assert probe["timer"] is False
    assert (
        probe["schedule_steps"] == probe["global_steps"] == 3
    )  # once per optimizer step, not per micro-batch
    assert all(0 < norm < float("inf") for norm in probe["norms"])
    assert probe["clip"] == (1.0 if stage == 0 else None)
