"""The Trainer: the training loop over the model in its DeepSpeed engine, with its checkpoints, stops and
metrics. Step N means N optimizer steps done; the batches of step N are a pure function of (seed, rank, N), so
a resumed run continues exactly where its checkpoint left off."""

from __future__ import annotations

import dataclasses
import statistics
import sys
import time
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from trainer import PREEMPTED_EXIT_CODE
from trainer.checkpoint.layout import tag_for
from trainer.checkpoint.store import CheckpointStore, Write
from trainer.config import ConfigError, TrainConfig
from trainer.dataset import TokenCache, train_batch, val_batch
from trainer.distributed import DistContext, any_rank, mean_over_ranks, on_every_rank
from trainer.engine import Engine, build_engine, enable_tf32, model_config
from trainer.launch import check_resumable
from trainer.metrics import MetricsLog, Outcome, duration, mfu, peak_flops
from trainer.model import GPT
from trainer.progress import TrainJobStatusReporter
from trainer.run_state import RunState
from trainer.startup import StartupClock, compile_estimate
from trainer.stopping import StopCondition, StopSignal

if TYPE_CHECKING:
    from trainer.prometheus import PrometheusExporter


def to_device(
    batch: tuple[np.ndarray, np.ndarray], device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    if device.type == "cuda":  # pinned host memory lets the copy overlap with compute
        return tuple(torch.from_numpy(a).pin_memory().to(device, non_blocking=True) for a in batch)  # type: ignore[return-value]
    return torch.from_numpy(batch[0]), torch.from_numpy(batch[1])


class Trainer:
    def __init__(
        self,
        config: TrainConfig,
        cache: TokenCache,
        context: DistContext,
        exporter: PrometheusExporter | None = None,
        clock: StartupClock | None = None,
    ) -> None:
        """exporter: rank 0's Prometheus endpoint, already serving. clock: started with the process."""
        self.config, self.context, self.exporter = config, context, exporter
        self.clock = clock or StartupClock()
        self.clock.lap("startup")
        train = config.train
        self.data = on_every_rank(cache.open)  # data a rank cannot use stops every rank
        self.clock.lap("data")
        torch.manual_seed(train.seed)  # the same initial weights on every rank
        self.model = GPT(model_config(config, self.data.vocab_size))
        # what a checkpoint's weights must match to be loaded into this model: its shape (dropout is not)
        self.identity = {k: v for k, v in dataclasses.asdict(self.model.config).items() if k != "dropout"}
        if context.device.type == "cuda":
            enable_tf32()
        # rank 0's look at checkpoint.dir decides for every rank
        on_every_rank(lambda: check_resumable(config) if context.is_main else None)
        self.engine: Engine = build_engine(self.model, config, context.device, context.world_size)
        self.clock.lap("engine")
        torch.manual_seed(train.seed + context.rank)  # dropout differs between ranks
        self.store = CheckpointStore(config.checkpoint.dir, config.checkpoint.keep_last, context)
        self.tokens_per_step = (
            train.micro_batch_size * train.grad_accum_steps * config.model.block_size * context.world_size
        )
        self.device_name = (
            torch.cuda.get_device_name(context.device) if context.device.type == "cuda" else "cpu"
        )
        self.peak = peak_flops(self.device_name, config.output.peak_tflops)
        show_progress = config.output.progress == "on" or (
            config.output.progress == "auto" and sys.stdout.isatty()
        )
        self.log = MetricsLog(config.output.dir, show_progress, train.max_steps) if context.is_main else None
        self.run_state = RunState(config.output.dir) if context.is_main else None
        self.step = 0
        self.last_loss: float | None = None
        self.stop_condition: StopCondition | None = train.stop_condition
        self.stop_reason: str | None = None  # why it ended before train.max_steps (train.stop_at)

    def close(self, wait: bool) -> None:
        """Wait for the write in flight (not when failing), then destroy the engine: ZeRO's C++-held hooks pin it."""
        self.store.close(wait)
        self.engine.engine.destroy()

    def record(self, **fields: Any) -> None:
        if self.log:
            self.log.record(**fields)

    def resume(self) -> str | None:
        self.store.remove_abandoned()
        found = self.store.newest_complete()
        if found is None:
            self.check_nothing_unreadable()
            return None
        tag, manifest = found
        if manifest.get("model") != self.identity:
            raise ConfigError(
                f"checkpoint.dir: {self.store.storage.describe(tag)} holds a different model "
                f"({manifest.get('model')}) than this config ({self.identity}); use another checkpoint.dir"
            )
        client_state = self.store.load(self.engine.engine, tag, manifest)
        saved = (manifest.get("world_size"), manifest.get("zero_stage"))
        if self.context.is_main and saved != (self.context.world_size, self.engine.zero_stage):
            print(
                f"resuming {tag} (written by {saved[0]} rank(s), ZeRO stage {saved[1]}) on "
                f"{self.context.world_size} rank(s), ZeRO stage {self.engine.zero_stage}",
                file=sys.stderr,
                flush=True,
            )
        self.step = int(client_state["step"])
        self.last_loss = client_state.get("loss")
        self.note_schedule()
        stopped = client_state.get("stopped_early") or {}
        if self.stop_condition is not None and stopped.get("stop_at") == str(self.stop_condition):
            self.stop_reason = stopped.get("reason")  # already done; a changed train.stop_at trains on
        if self.exporter is not None:
            try:
                written = self.store.storage.published_at(tag)
            except OSError:  # gone since it was read: as if just written
                written = time.time()
            self.exporter.checkpointed(self.step, written)
        return tag

    def note_schedule(self) -> None:
        """One line when a resumed run's train.max_steps is not its schedule's length (kept from its start)."""
        schedule = self.engine.schedule
        if schedule is None or not self.context.is_main:
            return
        max_steps = self.config.train.max_steps
        if schedule.horizon != max_steps > self.step:
            print(
                f"note: train.max_steps is {max_steps}; the LR schedule keeps the {schedule.horizon} steps this"
                f" run started with (cosine to train.min_lr at step {schedule.horizon}, then min_lr)",
                file=sys.stderr,
                flush=True,
            )

    def check_nothing_unreadable(self) -> None:
        """Checkpoints, none verified: ConfigError unless on_unreadable=restart (step 0 would lose the run)."""
        count = self.store.published_count()
        if count and self.config.checkpoint.on_unreadable == "fail":
            raise ConfigError(
                f"checkpoint.dir: none of the {count} checkpoint(s) in {self.config.checkpoint.dir} can be resumed"
                " (each is named above); move them away, or set checkpoint.on_unreadable=restart to train from step 0"
            )

    def save(self) -> None:
        stopped = (
            None
            if self.stop_reason is None
            else {"stop_at": str(self.stop_condition), "reason": self.stop_reason}
        )
        client_state = {
            "step": self.step,
            "loss": self.last_loss,
            "stopped_early": stopped,
        }
        self.store.save(self.engine.engine, self.step, client_state, {"model": self.identity})
        self.record_checkpoints(self.store.poll())

    def record_checkpoints(self, writes: list[Write]) -> None:
        """A line per published checkpoint: the loop blocked (of that, waiting for the previous write), the write."""
        for write in writes:
            self.record(event="checkpoint", step=write.step, path=write.path,
                        blocked_s=round(write.blocked_s, 4), waited_s=round(write.waited_s, 4),
                        write_s=None if write.write_s is None else round(write.write_s, 4))  # fmt: skip

    def evaluate(self) -> float:
        engine, train, block = self.engine.engine, self.config.train, self.config.model.block_size
        engine.eval()
        total = 0.0
        with torch.no_grad():
            for index in range(train.eval_batches):
                batch = val_batch(
                    self.data, train.micro_batch_size, block, train.seed, self.context.rank, index
                )
                total += float(engine(*to_device(batch, self.context.device)).item())
        engine.train()
        val_loss = mean_over_ranks(total / train.eval_batches, self.context.device)
        self.record(event="val", step=self.step, val_loss=val_loss)
        return val_loss

    def micro_batches(self) -> list[tuple[torch.Tensor, torch.Tensor]]:
        train, block, rank = self.config.train, self.config.model.block_size, self.context.rank
        shape = (train.micro_batch_size, block, train.seed, rank, self.step)
        return [
            to_device(train_batch(self.data, *shape, micro), self.context.device)
            for micro in range(train.grad_accum_steps)
        ]

    def start_sinks(self) -> None:
        """Rank 0's other destinations for its records, once the start step is known."""
        if self.log is None or self.run_state is None:
            return
        restarts = self.run_state.count_start()
        sinks = self.log.sinks
        if self.exporter is not None:
            self.exporter.restarts(restarts)
            sinks.append(self.exporter)
        if self.config.output.tracking == "mlflow":
            from trainer.tracking import MlflowTracker

            sinks.append(MlflowTracker(self.config, self.run_state, self.step))
        if (reporter := TrainJobStatusReporter.from_environment(self.config.train.max_steps)) is not None:
            sinks.append(reporter)

    def check_stop(self, metric: str, value: float | None) -> bool:
        """Whether train.stop_at is reached by this measurement, the same answer on every rank."""
        condition = self.stop_condition
        if condition is None or condition.metric != metric:
            return False
        reached = any_rank(condition.reached(value), self.context)
        if reached and self.stop_reason is None:
            self.stop_reason = f"train.stop_at {condition} reached: {metric} {value:.6g} at step {self.step}"
        return reached

    def run(self) -> int:
        outcome: Outcome = "failed"
        try:
            code = self._run()
            outcome = "preempted" if code == PREEMPTED_EXIT_CODE else "finished"
            return code
        finally:
            if self.log:
                self.log.close(outcome)

    def _run(self) -> int:
        train, checkpoint, output = self.config.train, self.config.checkpoint, self.config.output
        stop = StopSignal()
        resumed_from = self.resume()
        self.clock.lap("resume")
        # sinks before any record; the writer's shares. Both count as prepare_s.
        self.start_sinks()
        self.store.prepare(self.engine.engine)
        self.clock.lap("prepare")
        # recorded after the first step (at once when there is none), with the time to it
        start = dict(
            event="start",
            step=self.step,
            resumed_from=resumed_from,
            world_size=self.context.world_size,
            device=self.device_name,
            threads=torch.get_num_threads(),
            compiled=self.engine.compiled,
            zero_stage=self.engine.zero_stage,
            params=self.model.num_params(),
            tokens=len(self.data.train),
            data=self.data.describe,
        )
        start_step = self.step
        nothing_to_do = self.step >= train.max_steps or self.stop_reason is not None
        if nothing_to_do:
            self.record(**start, **self.clock.report(), first_step_s=None, at=self.clock.timestamps())
        rates: list[float] = []
        val_loss: float | None = None
        flops_per_token = self.model.flops_per_token()
        # Tokens/s counts training time only: time spent evaluating and saving is subtracted.
        interval_start, interval_steps, paused = time.perf_counter(), 0, 0.0
        while self.step < train.max_steps and self.stop_reason is None:
            lr = self.engine.engine.get_lr()[0]
            loss, grad_norm = self.engine.train_step(self.micro_batches())
            self.step += 1
            interval_steps += 1
            if "first_step_s" not in self.clock.parts:
                loss.item()  # waits for the device: the first step is done
                self.clock.lap("first_step")
                self.record(**start, **self.clock.report(), at=self.clock.timestamps())
            reached = False
            if self.step % output.log_every == 0 or self.step == train.max_steps:
                self.last_loss = mean_over_ranks(float(loss.item()), self.context.device)
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
                reached = self.check_stop("loss", self.last_loss)
            pause_start = time.perf_counter()
            if train.eval_every and self.step % train.eval_every == 0:
                val_loss = self.evaluate()
                reached = self.check_stop("val_loss", val_loss) or reached
            if reached:
                self.record(event="stop_at", step=self.step, reason=self.stop_reason)
            stopping = any_rank(stop.received is not None, self.context)
            if self.step % checkpoint.every_steps == 0 or stopping or reached or self.step == train.max_steps:
                self.save()
            else:
                self.record_checkpoints(self.store.poll())
            if self.log:
                self.log.progress(self.step, self.last_loss)
            if stopping:  # exit only once the stop's checkpoint is published
                self.record_checkpoints(self.store.wait())
                self.record(event="preempted", step=self.step, signal=stop.received,
                            signal_at=stop.received_at, at=round(time.time(), 3))  # fmt: skip
                self.close_with(str(stop.received), start_step, statistics.median(rates) if rates else None)
                return PREEMPTED_EXIT_CODE
            paused += time.perf_counter() - pause_start
        if val_loss is None or self.step % train.eval_every:  # not evaluated at the last step yet
            val_loss = self.evaluate()
        self.record_checkpoints(self.store.wait())  # the last save was written while evaluating
        if self.log:
            median_rate = statistics.median(rates) if rates else None
            step_s = None if median_rate is None else self.tokens_per_step / median_rate
            startup = self.clock.report()
            self.log.summary(
                **startup,
                compile_s=compile_estimate(startup.get("first_step_s"), step_s, self.engine.compiled),
                final_step=self.step,
                final_loss=self.last_loss,
                val_loss=val_loss,
                tokens_per_sec=median_rate,
                mfu=median_rate and mfu(median_rate, flops_per_token, self.peak, self.context.world_size),
                world_size=self.context.world_size,
                device=self.device_name,
                stop_reason=self.stop_reason or f"train.max_steps ({train.max_steps}) reached",
            )
            outcome = "nothing" if nothing_to_do else "finished"
            self.close_with(
                outcome, start_step, median_rate, val_loss, resumed_from if nothing_to_do else None
            )
        return 0

    def close_with(
        self,
        outcome: str,
        start_step: int,
        tokens_per_sec: float | None,
        val_loss: float | None = None,
        checkpoint: str | None = None,
    ) -> None:
        """Rank 0's last line, for a person. outcome: finished, nothing (already done) or the signal's name."""
        if self.log is None:
            return
        step, max_steps, reason = self.step, self.config.train.max_steps, self.stop_reason
        measured = (("loss", self.last_loss), ("val_loss", val_loss))
        losses = ", ".join(f"{name} {value:.4f}" for name, value in measured if value is not None)
        took = duration(time.time() - self.clock.origin)
        rate = f", {tokens_per_sec:,.0f} tokens/s" if tokens_per_sec else ""
        where = f"checkpoints in {self.config.checkpoint.dir} (newest {checkpoint or tag_for(step)})"
        path = self.log.path
        curve = f"metrics in {path} (the curve: python -m trainer plot --metrics {path} --out loss.png)"
        if outcome == "nothing":
            why = reason or f"train.max_steps ({max_steps}) was already reached"
            line = (
                f"nothing to train: resumed at step {step} and {why}; raise train.max_steps to train on"
                f" ({losses}); {where}; {curve}"
            )
        elif outcome == "finished":
            what = f"trained steps {start_step}→{step}" + (f" ({reason})" if reason else f" of {max_steps}")
            line = f"done: {what} in {took}{rate}; {losses or 'no loss measured'}; {where}; {curve}"
        else:
            line = (
                f"stopped by {outcome} at step {step} of {max_steps} after {took}{rate}"
                f"{'; ' + losses if losses else ''}; {where}; run the same command again to resume"
            )
        print(line, file=sys.stderr, flush=True)
