"""The training loop: data, model, DeepSpeed engine, checkpoints, preemption, metrics.

Step N means N optimizer steps done. The batches of step N are a pure function of (seed, rank, N), so the data
position is the step itself and a resumed run continues exactly where a checkpoint left off.
"""

from __future__ import annotations

import os
import signal
import statistics
import sys
import time
from pathlib import Path
from types import FrameType
from typing import Any

import numpy as np
import torch

from trainer import PREEMPTED_EXIT_CODE, STATUS_DIR_ENV
from trainer.checkpoint import CheckpointStore
from trainer.config import ConfigError, TrainConfig
from trainer.dataset import DataError, TokenCache, TokenData, train_batch, val_batch
from trainer.distributed import (
    DistContext,
    any_rank,
    gather_objects,
    init_distributed,
    mean_over_ranks,
    shutdown,
)
from trainer.engine import Engine, build_engine, enable_tf32, model_config
from trainer.metrics import MetricsLog, mfu, peak_flops
from trainer.model import GPT
from trainer.startup import StartupClock, compile_estimate


class StopSignal:
    """Remembers SIGTERM (Kubernetes draining or preempting the pod) and SIGINT instead of dying mid-step."""

    def __init__(self) -> None:
        self.received: str | None = None
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._handle)

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        self.received = signal.Signals(signum).name


def report_exit_code(code: int) -> None:
    status_dir = os.environ.get(STATUS_DIR_ENV)
    if status_dir:
        rank = os.environ.get("RANK", "0")
        (Path(status_dir) / f"rank{rank}.exit").write_text(str(code), encoding="utf-8")


def to_device(
    batch: tuple[np.ndarray, np.ndarray], device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    if device.type == "cuda":  # pinned host memory lets the copy overlap with compute
        return tuple(torch.from_numpy(a).pin_memory().to(device, non_blocking=True) for a in batch)  # type: ignore[return-value]
    return torch.from_numpy(batch[0]), torch.from_numpy(batch[1])


def prepare_data(cache: TokenCache, context: DistContext) -> TokenData:
    """Tokenize once per node (local rank 0), everyone else waits; an error reaches every rank."""
    problem = None
    if context.local_rank == 0:
        try:
            cache.prepare()
        except DataError as error:
            problem = str(error)
    problems = [p for p in gather_objects(problem) if p]
    if problems:
        raise DataError(problems[0])
    return cache.open()


def model_identity(config: TrainConfig, vocab_size: int) -> dict[str, Any]:
    """What a checkpoint's weights must match to be loaded into this run's model."""
    return {
        **config.model_shape(),
        "block_size": config.model.block_size,
        "bias": config.model.bias,
        "vocab_size": vocab_size,
    }


def saved_zero_stage(manifest: dict[str, Any]) -> int | None:
    """The ZeRO stage a checkpoint was saved at: its manifest's zero_stage; for a manifest from before that
    field, 0 or 1 for "without or with ZeRO optimizer partitions" (DeepSpeed's zero_pp_rank_* files), which
    is what decides whether DeepSpeed can load it into an engine."""
    if "zero_stage" in manifest:
        return int(manifest["zero_stage"])
    files = manifest.get("files")
    if not isinstance(files, dict):
        return None
    return 1 if any(name.startswith("zero_pp_rank_") for name in files) else 0


class Trainer:
    def __init__(
        self, config: TrainConfig, cache: TokenCache, context: DistContext, clock: StartupClock | None = None
    ) -> None:
        self.config = config
        self.context = context
        self.clock = clock or StartupClock()
        self.clock.lap("startup")
        train = config.train
        self.data = prepare_data(cache, context)
        self.clock.lap("data")
        torch.manual_seed(train.seed)  # the same initial weights on every rank
        self.model = GPT(model_config(config, self.data.vocab_size))
        self.identity = model_identity(config, self.data.vocab_size)
        if context.device.type == "cuda":
            enable_tf32()
        self.engine: Engine = build_engine(self.model, config, context.device, context.world_size)
        self.clock.lap("engine")
        torch.manual_seed(train.seed + context.rank)  # dropout differs between ranks
        self.store = CheckpointStore(config.checkpoint.dir, config.checkpoint.keep_last, context)
        self.tokens_per_step = (
            train.micro_batch_size * train.grad_accum_steps * config.model.block_size * context.world_size
        )
        device_name = torch.cuda.get_device_name(context.device) if context.device.type == "cuda" else "cpu"
        self.peak = peak_flops(device_name, config.output.peak_tflops)
        self.device_name = device_name
        show_progress = config.output.progress == "on" or (
            config.output.progress == "auto" and sys.stdout.isatty()
        )
        self.log = MetricsLog(config.output.dir, show_progress, train.max_steps) if context.is_main else None
        self.step = 0
        self.last_loss: float | None = None

    def close(self) -> None:
        """Release the DeepSpeed engine. The ZeRO optimizer's gradient hooks (post-accumulate-grad hooks
        on every parameter) are held on the C++ side, out of the cycle collector's sight: without removing
        them the engine, its optimizer and the process groups they hold are never freed. (ZeRO-3 also
        keeps the model on deepspeed.runtime.zero.parameter_offload.FWD_MODULE_STACK for good, so with
        stage 3 its parameters' groups are still freed only at interpreter teardown.)"""
        self.engine.engine.destroy()

    def record(self, **fields: Any) -> None:
        if self.log:
            self.log.record(**fields)

    def resume(self) -> str | None:
        self.store.remove_abandoned()
        found = self.store.newest_complete()
        if found is None:
            return None
        tag, manifest = found
        if manifest.get("model") != self.identity:
            raise ConfigError(
                f"checkpoint.dir: {self.store.root / tag} holds a different model ({manifest.get('model')}) "
                f"than this config ({self.identity}); use another checkpoint.dir"
            )
        saved = saved_zero_stage(manifest)
        running = self.engine.zero_stage
        if saved is not None and (saved == 0) != (running == 0):
            # DeepSpeed keeps the optimizer state in the model file at stage 0 and in per-rank partitions
            # above it: neither loads into the other. One rank runs ZeRO 0 (trainer.engine.zero_stage), so a
            # resize between one rank and several can be such a change.
            saved_shown = manifest.get("zero_stage", ">= 1" if saved else 0)
            remedy = (
                "resume with 2 or more ranks (ZeRO stages 1-3 run only there)"
                if running == 0
                else "resume with one rank or with train.zero_stage=0"
            )
            raise ConfigError(
                f"checkpoint.dir: {self.store.root / tag} was saved at ZeRO stage {saved_shown} by"
                f" {manifest.get('world_size')} rank(s), and this run ({self.context.world_size} rank(s)) runs"
                f" ZeRO stage {running}, which cannot load it: {remedy}, or start in another checkpoint.dir"
            )
        client_state = self.store.load(self.engine.engine, tag)
        self.step = int(client_state["step"])
        self.last_loss = client_state.get("loss")
        return tag

    def save(self) -> None:
        client_state = {
            "step": self.step,
            "data_position": {"step": self.step, "seed": self.config.train.seed},
            "loss": self.last_loss,
        }
        path = self.store.save(
            self.engine.engine,
            self.step,
            client_state,
            {"model": self.identity, "zero_stage": self.engine.zero_stage},
        )
        self.record(event="checkpoint", step=self.step, path=str(path))

    def evaluate(self) -> float:
        engine, train = self.engine.engine, self.config.train
        engine.eval()
        total = 0.0
        with torch.no_grad():
            for index in range(train.eval_batches):
                batch = val_batch(
                    self.data,
                    train.micro_batch_size,
                    self.config.model.block_size,
                    train.seed,
                    self.context.rank,
                    index,
                )
                total += float(engine(*to_device(batch, self.context.device)).item())
        engine.train()
        return mean_over_ranks(total / train.eval_batches, self.context.device)

    def micro_batches(self) -> list[tuple[torch.Tensor, torch.Tensor]]:
        train = self.config.train
        return [
            to_device(
                train_batch(
                    self.data,
                    train.micro_batch_size,
                    self.config.model.block_size,
                    train.seed,
                    self.context.rank,
                    self.step,
                    micro,
                ),
                self.context.device,
            )
            for micro in range(train.grad_accum_steps)
        ]

    def run(self) -> int:
        train, checkpoint, output = self.config.train, self.config.checkpoint, self.config.output
        stop = StopSignal()
        resumed_from = self.resume()
        self.clock.lap("resume")
        # Recorded once the first step is done (or at once when there is none to do), with the time to it.
        start = {
            "event": "start",
            "step": self.step,
            "resumed_from": resumed_from,
            "world_size": self.context.world_size,
            "device": self.device_name,
            "compiled": self.engine.compiled,
            "zero_stage": self.engine.zero_stage,
            "params": self.model.num_params(),
            "tokens": len(self.data.train),
            "data": self.data.describe,
        }
        if self.step >= train.max_steps:
            self.record(**start, **self.clock.report(), first_step_s=None)
        rates: list[float] = []
        val_loss: float | None = None
        flops_per_token = self.model.flops_per_token()
        # Tokens/s counts training time only: time spent evaluating and saving is subtracted.
        interval_start, interval_steps, paused = time.perf_counter(), 0, 0.0
        while self.step < train.max_steps:
            lr = self.engine.engine.get_lr()[0]
            loss, grad_norm = self.engine.train_step(self.micro_batches())
            self.step += 1
            interval_steps += 1
            if "first_step_s" not in self.clock.parts:
                loss.item()  # waits for the device: the first step is done
                self.clock.lap("first_step")
                self.record(**start, **self.clock.report())
            if self.step % output.log_every == 0 or self.step == train.max_steps:
                self.last_loss = mean_over_ranks(
                    float(loss.item()), self.context.device
                )  # waits for the step
                elapsed = time.perf_counter() - interval_start - paused
                rate = interval_steps * self.tokens_per_step / elapsed
                rates.append(rate)
                self.record(
                    event="train",
                    step=self.step,
                    loss=self.last_loss,
                    lr=lr,
                    grad_norm=None if grad_norm is None else float(grad_norm),
                    tokens_per_sec=rate,
                    mfu=mfu(rate, flops_per_token, self.peak, self.context.world_size),
                    step_time_ms=1000 * elapsed / interval_steps,
                )
                interval_start, interval_steps, paused = time.perf_counter(), 0, 0.0
            pause_start = time.perf_counter()
            if train.eval_every and self.step % train.eval_every == 0:
                val_loss = self.evaluate()
                self.record(event="val", step=self.step, val_loss=val_loss)
            stopping = any_rank(stop.received is not None, self.context)
            if self.step % checkpoint.every_steps == 0 or stopping or self.step == train.max_steps:
                self.save()
            if self.log:
                self.log.progress(self.step)
            if stopping:
                self.record(event="preempted", step=self.step, signal=stop.received)
                return PREEMPTED_EXIT_CODE
            paused += time.perf_counter() - pause_start
        if val_loss is None or self.step % train.eval_every:  # not evaluated at the last step yet
            val_loss = self.evaluate()
            self.record(event="val", step=self.step, val_loss=val_loss)
        if self.log:
            median_rate = statistics.median(rates) if rates else None
            startup = self.clock.report()
            self.log.summary(
                **startup,
                compile_s=compile_estimate(
                    startup.get("first_step_s"),
                    None if median_rate is None else self.tokens_per_step / median_rate,
                    self.engine.compiled,
                ),
                final_step=self.step,
                final_loss=self.last_loss,
                val_loss=val_loss,
                tokens_per_sec=median_rate,
                mfu=None
                if median_rate is None
                else mfu(median_rate, flops_per_token, self.peak, self.context.world_size),
                world_size=self.context.world_size,
                device=self.device_name,
            )
        return 0


def train(config: TrainConfig) -> int:
    """Train (or resume) to train.max_steps; the exit code: 0, or PREEMPTED_EXIT_CODE after a stop signal."""
    clock = StartupClock()
    cache = TokenCache(config.data, config.model.block_size)  # a missing path or unknown encoding fails here
    context = init_distributed()
    try:
        return _train(config, cache, context, clock)
    finally:
        shutdown(context)


def _train(config: TrainConfig, cache: TokenCache, context: DistContext, clock: StartupClock) -> int:
    """The Trainer's whole life: once this returns nothing refers to it, and shutdown can free its engine
    and, with it, the process groups that the engine's optimizer and parameters hold."""
    trainer = Trainer(config, cache, context, clock)
    try:
        return trainer.run()
    finally:
        trainer.close()
