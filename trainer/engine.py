"""The DeepSpeed engine for a GPT: ZeRO stage, precision, accumulation, clipping, AdamW, warmup + cosine LR."""

from __future__ import annotations

import math
import os
import shutil
import sys
from dataclasses import dataclass
from typing import Any

import torch

from trainer.config import TrainConfig
from trainer.model import GPT, GPTConfig


def model_config(config: TrainConfig, vocab_size: int) -> GPTConfig:
    model = config.model
    return GPTConfig(
        vocab_size=vocab_size,
        block_size=model.block_size,
        **config.model_shape(),
        dropout=model.dropout,
        bias=model.bias,
    )


@dataclass
class Schedule:
    """Linear warmup, then cosine to min_ratio at horizon: the first train.max_steps, kept on resume (raising
    it extends the run at min_lr)."""

    warmup_steps: int
    horizon: int
    min_ratio: float

    def __call__(self, step: int) -> float:
        if step < self.warmup_steps:
            return (step + 1) / self.warmup_steps
        progress = min(1.0, (step - self.warmup_steps) / max(1, self.horizon - self.warmup_steps))
        return self.min_ratio + (1.0 - self.min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def use_bf16(config: TrainConfig, device: torch.device) -> bool:
    if config.train.precision == "auto":
        return device.type == "cuda"
    return config.train.precision == "bf16"


def zero_stage(config: TrainConfig, world_size: int) -> int:
    """0 on one rank: ZeRO works tensor by tensor on the host (0.53 of a plain loop, docs/benchmarks.md).
    upstream: deepspeed runtime/zero/stage_1_and_2.py (a gradient hook and copy per parameter) @ 0.19.8"""
    return config.train.zero_stage if world_size > 1 else 0


def clips_itself(stage: int) -> bool:
    """Whether the loop clips, not DeepSpeed: at ZeRO 0 DeepSpeed's clipping throws the gradient norm away."""
    return stage == 0


def deepspeed_config(config: TrainConfig, world_size: int, bf16: bool, stage: int) -> dict[str, Any]:
    """bf16 at ZeRO 0: autocast (DeepSpeed's "bf16" there syncs per tensor per step); ZeRO 1-3: its own."""
    train = config.train
    zero = stage > 0
    return {
        "train_micro_batch_size_per_gpu": train.micro_batch_size,
        "gradient_accumulation_steps": train.grad_accum_steps,
        "train_batch_size": train.micro_batch_size * train.grad_accum_steps * world_size,
        "gradient_clipping": 0.0 if clips_itself(stage) else train.grad_clip,
        "bf16": {"enabled": bf16 and zero},
        "torch_autocast": {"enabled": bf16 and not zero, "dtype": "bfloat16"},
        "zero_optimization": {"stage": stage},
        # DeepSpeed's throughput timer syncs the host twice per micro-batch without its dataloader; we time.
        "timers": {"throughput": {"enabled": False}},
        # The GPT is built whole on every rank before ZeRO-3 partitions it; fine for the presets here.
        "zero_allow_untested_optimizer": True,
        "steps_per_print": 2**31 - 1,  # the trainer logs its own metrics
        "wall_clock_breakdown": False,
        # Our tags are the same on every rank by construction; DeepSpeed's check costs two all-reduces.
        "checkpoint": {"tag_validation": "IGNORE"},
    }


@dataclass
class Engine:
    engine: Any  # deepspeed.DeepSpeedEngine
    model: GPT
    device: torch.device
    clip_norm: float | None  # set when the loop clips (see clips_itself); 0 means measure only
    zero_stage: int  # the stage the engine runs (zero_stage(): 0 on one rank whatever train.zero_stage says)
    compiled: bool = False  # torch.compile in effect (train.compile on a GPU with a C compiler for Triton)
    schedule: Schedule | None = None  # the LR schedule's shape (its horizon is kept across resumes)

    def train_step(self, micro_batches: list[tuple[torch.Tensor, torch.Tensor]]) -> tuple[torch.Tensor, Any]:
        """The mean loss (a tensor: no host sync) and the gradient norm before clipping (or None)."""
        engine = self.engine
        loss_sum = torch.zeros((), device=self.device)
        grad_norm: Any = None
        for inputs, targets in micro_batches:
            loss = engine(inputs, targets)
            engine.backward(loss)
            if self.clip_norm is not None and engine.is_gradient_accumulation_boundary():
                grad_norm = torch.nn.utils.clip_grad_norm_(
                    self.model.parameters(), self.clip_norm or math.inf
                )
            engine.step()
            loss_sum += loss.detach()
        if self.clip_norm is None:
            grad_norm = engine.get_global_grad_norm()
        return loss_sum / len(micro_batches), grad_norm


def build_engine(
    model: GPT, config: TrainConfig, device: torch.device, world_size: int, *, stage: int | None = None
) -> Engine:
    import deepspeed  # heavy: only once the process group exists

    train = config.train
    if stage is None:
        stage = zero_stage(config, world_size)
    if world_size == 1 and stage == 0 < train.zero_stage:
        print(
            f"note: train.zero_stage={train.zero_stage} runs as ZeRO stage {stage} on one rank: ZeRO"
            " partitions over data-parallel ranks and one has nothing to partition, while DeepSpeed's ZeRO"
            " optimizer would still work tensor by tensor on the host (the stage applies with 2 or more"
            " ranks)",
            file=sys.stderr,
            flush=True,
        )
    model.to(device)
    optimizer = torch.optim.AdamW(
        model.optimizer_groups(train.weight_decay),
        lr=train.lr,
        betas=(train.beta1, train.beta2),
        fused=device.type in ("cuda", "cpu"),  # CPU since torch 2.4
    )
    shape = Schedule(train.warmup_steps, train.max_steps, train.min_lr / train.lr)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, shape)
    engine, _, _, _ = deepspeed.initialize(
        model=model,
        optimizer=optimizer,
        lr_scheduler=schedule,
        config=deepspeed_config(config, world_size, use_bf16(config, device), stage),
    )
    if stage == 0 and world_size == 1:
        # ZeRO 0 all-reduces every gradient even alone, the identity: skip it (_backward_epilogue, step()).
        # upstream: deepspeed runtime/engine.py allreduce_gradients -> buffered_allreduce_fallback @ 0.19.8
        engine.enable_backward_allreduce = False
    compiled = False
    if train.compile and device.type == "cuda":
        problem = compile_problem()
        if problem is None:
            engine.compile()
            compiled = True
        else:
            print(
                f"warning: train.compile=true ignored, running eager: {problem}", file=sys.stderr, flush=True
            )
    clip_norm = train.grad_clip if clips_itself(stage) else None
    return Engine(engine, model, device, clip_norm, stage, compiled, shape)


def compile_problem() -> str | None:
    """Why torch.compile cannot work, or None: Triton needs a host C compiler, which runtime images lack."""
    if os.environ.get("CC") or shutil.which("gcc") or shutil.which("clang"):
        return None
    return "no C compiler for Triton (set CC, or install gcc in the image)"


def enable_tf32() -> None:
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
