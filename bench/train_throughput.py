"""Training throughput of the trainer's DeepSpeed path against a plain PyTorch loop on the same model.

Every path trains the same GPT (same initial weights, same random token batches, AdamW, gradient clipping):
the plain loop (torch.autocast bf16 on GPU, fused AdamW) and the trainer's engine at each requested ZeRO stage
as the trainer builds it (one process: one rank, so ZeRO 1-3 run as ZeRO 0, see trainer.engine.zero_stage),
and optionally DeepSpeed at a stage as configured (--literal-zero-stage: what one rank ran before, and what
each rank of a multi-GPU job runs), each eager and/or torch.compile'd. Within one compile mode the
measurements are interleaved (plain, ZeRO a, ZeRO b, plain, ...) so drift in machine load hits all alike, and
the median over repeats is reported per path: tokens/s, MFU (null on CPU unless --peak-tflops), the
DeepSpeed/plain ratio and, on GPU, peak memory. Then, per DeepSpeed path, the checkpoint save as the trainer
does it (CheckpointStore: the snapshot to host memory that blocks the step loop, then in the background the
shard, its checksum and the atomic publish, while the loop trains on) and the time from the start of a resume
(newest checkpoint found and verified, a new engine built, its state loaded) to the end of its first training
step. Single process.

    python bench/train_throughput.py                                  # CPU defaults
    python bench/train_throughput.py --preset gpt2-124m --block-size 1024 --micro-batch 16 \
        --zero-stage 0 1 2 --compile both                             # the GPU table: 2 x (plain + 3 ZeRO)

Dtype policy: the plain loop and ZeRO 0 keep fp32 weights under torch.autocast(bfloat16); ZeRO 1-3 use
DeepSpeed's bf16 (bf16 weights and activations, fp32 master weights in the ZeRO optimizer). Peak memory per
path is estimated as what the path keeps allocated after its warm-up (weights, optimizer state, kept gradient
buffers) plus the largest transient above that during its timed steps: every path's state lives in the one
process, so the device-wide peak would count them all.
"""

from __future__ import annotations

import argparse
import copy
import json
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from trainer.checkpoint.store import CheckpointStore
from trainer.config import TrainConfig, load_config
from trainer.distributed import DistContext, init_distributed, shutdown
from trainer.engine import Engine, build_engine, compile_problem, enable_tf32, model_config, use_bf16
from trainer.metrics import mfu, peak_flops
from trainer.model import GPT

VOCAB = 50257  # GPT-2's


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--preset", default="mini", help="model.preset (default mini; gpt2-124m on a GPU)")
    parser.add_argument("--block-size", type=int, default=256)
    parser.add_argument("--micro-batch", type=int, default=8)
    parser.add_argument("--grad-accum", type=int, default=1)
    parser.add_argument("--steps", type=int, default=10, help="optimizer steps per measurement")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps per path first (and compile)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument(
        "--zero-stage",
        type=int,
        nargs="+",
        default=[0],
        choices=[0, 1, 2, 3],
        help="one or more train.zero_stage values, built as the trainer builds them on one rank",
    )
    parser.add_argument(
        "--literal-zero-stage",
        type=int,
        nargs="*",
        default=[],
        choices=[0, 1, 2, 3],
        help="ZeRO stages built as configured even on one rank (DeepSpeed's ZeRO optimizer)",
    )
    parser.add_argument(
        "--compile",
        nargs="?",
        const="on",
        default="off",
        choices=["off", "on", "both"],
        help="torch.compile every path (GPU with a C compiler; a bare --compile means on); both: eager, then compiled",
    )
    parser.add_argument(
        "--no-checkpoint", action="store_true", help="skip the checkpoint save / resume timings"
    )
    parser.add_argument(
        "--checkpoint-dir",
        default=None,
        help="where to save: a directory or s3://bucket/prefix (AWS_* variables; default: a temporary directory)",
    )
    parser.add_argument(
        "--peak-tflops", type=float, default=None, help="device peak for MFU (else the GPU table)"
    )
    return parser.parse_args()


@dataclass
class Path_:
    """One measured path: the plain loop, or the trainer's engine at one ZeRO stage."""

    name: str
    zero_stage: int | None  # train.zero_stage
    compiled: bool
    step: Callable[[], torch.Tensor]
    engine: Engine | None = None
    config: TrainConfig | None = None
    resident_bytes: int = 0  # kept allocated after warm-up
    transient_bytes: int = 0  # the largest excess over that during the timed steps
    rates: list[float] = field(default_factory=list)
    checkpoint: dict[str, Any] = field(default_factory=dict)


def plain_step_fn(
    model: GPT, compiled: bool, bf16: bool, batches: list[tuple[torch.Tensor, torch.Tensor]]
) -> Callable[[], torch.Tensor]:
    """The loop one would write without DeepSpeed: autocast bf16 on GPU, fused AdamW, clipping."""
    optimizer = torch.optim.AdamW(model.optimizer_groups(0.1), lr=1e-4, betas=(0.9, 0.95), fused=True)
    forward = torch.compile(model) if compiled else model
    device_type = batches[0][0].device.type

    def step() -> torch.Tensor:
        total = torch.zeros((), device=batches[0][0].device)
        for inputs, targets in batches:
            with torch.autocast(device_type, dtype=torch.bfloat16, enabled=bf16):
                loss = forward(inputs, targets)
            (loss / len(batches)).backward()
            total += loss.detach()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return total

    return step


def engine_step(
    engine: Engine, batches: list[tuple[torch.Tensor, torch.Tensor]]
) -> Callable[[], torch.Tensor]:
    return lambda: engine.train_step(batches)[0]


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def allocated(device: torch.device) -> int:
    return torch.cuda.memory_allocated(device) if device.type == "cuda" else 0


def timed(step: Callable[[], torch.Tensor], steps: int, device: torch.device) -> float:
    """Seconds for `steps` optimizer steps, waiting for the device at both ends."""
    synchronize(device)
    start = time.perf_counter()
    for _ in range(steps):
        last = step()
    last.item()
    synchronize(device)
    return time.perf_counter() - start


def bench_config(args: argparse.Namespace, zero_stage: int, compiled: bool) -> TrainConfig:
    return load_config(
        None,
        [
            f"model.preset={args.preset}", f"model.block_size={args.block_size}", "data.path=unused",
            "train.max_steps=1000000", "checkpoint.dir=unused", "checkpoint.every_steps=1", "output.dir=unused",
            f"train.micro_batch_size={args.micro_batch}", f"train.grad_accum_steps={args.grad_accum}",
            f"train.zero_stage={zero_stage}", f"train.compile={compiled}", "train.lr=1e-4",
            "train.min_lr=1e-5", "train.warmup_steps=0", "train.grad_clip=1.0",
        ],
    )  # fmt: skip


def build_paths(
    args: argparse.Namespace,
    base: GPT,
    compiled: bool,
    batches: list[tuple[torch.Tensor, torch.Tensor]],
    device: torch.device,
    bf16: bool,
) -> list[Path_]:
    """The plain loop and one engine per ZeRO stage, each warmed up; its resident memory measured alone."""
    paths = []
    before = allocated(device)
    plain_model = copy.deepcopy(base).to(device)
    plain_compiled = compiled and device.type == "cuda" and compile_problem() is None
    plain = Path_("plain", None, plain_compiled, plain_step_fn(plain_model, plain_compiled, bf16, batches))
    timed(plain.step, args.warmup, device)
    plain.resident_bytes = allocated(device) - before
    paths.append(plain)
    stages = [("trainer", stage) for stage in args.zero_stage]
    stages += [("deepspeed", stage) for stage in args.literal_zero_stage]
    for name, stage in stages:
        before = allocated(device)
        config = bench_config(args, stage, compiled)
        literal = stage if name == "deepspeed" else None  # None: the trainer's choice for one rank
        engine = build_engine(copy.deepcopy(base), config, device, world_size=1, stage=literal)
        path = Path_(name, stage, engine.compiled, engine_step(engine, batches), engine, config)
        timed(path.step, args.warmup, device)
        path.resident_bytes = allocated(device) - before
        paths.append(path)
    return paths


def measure(paths: list[Path_], args: argparse.Namespace, tokens_per_step: int, device: torch.device) -> None:
    for _ in range(args.repeats):
        for path in paths:  # interleaved
            start = allocated(device)
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
            path.rates.append(args.steps * tokens_per_step / timed(path.step, args.steps, device))
            if device.type == "cuda":
                transient = torch.cuda.max_memory_allocated(device) - start
                path.transient_bytes = max(path.transient_bytes, transient)


def checkpoint_times(
    path: Path_,
    root: str,
    context: DistContext,
    batches: list[tuple[torch.Tensor, torch.Tensor]],
) -> dict[str, Any]:
    """Seconds training is blocked by one save (as the trainer saves: the snapshot), seconds the background
    write took (shard, fsync, sha256, manifest, rename) and the step rate while it ran, over the path's
    median rate; then from the start of a resume (newest checkpoint found and its checksums verified, a new
    model and engine built, the state loaded) to the end of the first step; in this process, so CUDA and
    Python are already warm (a lower bound of a restarted pod's)."""
    assert path.engine is not None and path.config is not None
    device = context.device
    store = CheckpointStore(
        f"{root.rstrip('/')}/{path.name}_zero{path.zero_stage}_compile{int(path.compiled)}", 1, context
    )
    synchronize(device)
    start = time.perf_counter()
    store.save(path.engine.engine, 1, {"step": 1}, {"model": path.name})
    blocked_s = time.perf_counter() - start
    steps, start = 0, time.perf_counter()
    while not (finished := store.poll()):  # the step loop goes on while the write runs
        timed(path.step, 1, device)
        steps += 1
    training_s = time.perf_counter() - start
    tokens_per_step = sum(inputs.numel() for inputs, _ in batches)
    rate_while_writing = steps * tokens_per_step / training_s if steps else None

    start = time.perf_counter()
    found = store.newest_complete()
    assert found is not None
    torch.manual_seed(0)
    engine = build_engine(
        GPT(model_config(path.config, VOCAB)), path.config, device, world_size=1, stage=path.engine.zero_stage
    )
    store.load(engine.engine, *found)
    synchronize(device)
    loaded = time.perf_counter()
    engine.train_step(batches)[0].item()
    synchronize(device)
    end = time.perf_counter()
    engine.engine.destroy()
    store.close(wait=True)
    return {
        "checkpoint_block_s": round(blocked_s, 4),
        "checkpoint_write_s": round(finished[0].write_s or 0.0, 3),
        "steps_while_writing": steps,
        "rate_while_writing_over_median": None
        if rate_while_writing is None
        else round(rate_while_writing / statistics.median(path.rates), 3),
        "resume_to_first_step_s": round(end - start, 3),
        "resume_load_s": round(loaded - start, 3),
        "first_step_after_resume_s": round(end - loaded, 3),
    }


def row(path: Path_, plain_rate: float, flops_per_token: int, peak: float | None) -> dict[str, Any]:
    rate = statistics.median(path.rates)
    memory = (path.resident_bytes + path.transient_bytes) / 2**30 if path.transient_bytes else None
    return {
        "path": path.name,
        "zero_stage": path.zero_stage,
        "engine_stage": None if path.engine is None else path.engine.zero_stage,
        "compile": path.compiled,
        "tokens_per_sec": round(rate, 1),
        "all_tokens_per_sec": [round(v, 1) for v in path.rates],
        "mfu": mfu(rate, flops_per_token, peak, 1),
        "over_plain": round(rate / plain_rate, 4),
        "peak_memory_gib": None if memory is None else round(memory, 3),
        **path.checkpoint,
    }


def markdown(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| path | ZeRO | runs as | compile | tokens/s | MFU | / plain | peak GiB | save blocks s "
        "| write s (background) | resume to 1st step s |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        cells = [r["path"], r["zero_stage"], r["engine_stage"], r["compile"], r["tokens_per_sec"], r["mfu"],
                 r["over_plain"], r["peak_memory_gib"], r.get("checkpoint_block_s"), r.get("checkpoint_write_s"),
                 r.get("resume_to_first_step_s")]  # fmt: skip
        shown = [
            "-" if c is None else f"{c:.3f}" if isinstance(c, float) and c < 1 else str(c) for c in cells
        ]
        lines.append("| " + " | ".join(shown) + " |")
    return "\n".join(lines)


def main() -> None:
    args = parse_args()
    context = init_distributed()
    device = context.device
    if device.type == "cuda":
        enable_tf32()
    # One compiled GPT.forward per model instance (plain, each stage, each resumed engine): stay under
    # dynamo's recompile limit (8 by default), past which it would silently run the rest eager.
    dynamo_config = torch._dynamo.config
    for name in ("recompile_limit", "cache_size_limit"):
        if hasattr(dynamo_config, name):
            setattr(dynamo_config, name, max(64, getattr(dynamo_config, name)))
    torch.manual_seed(0)
    base = GPT(model_config(bench_config(args, 0, False), VOCAB))
    batches = [
        (torch.randint(0, VOCAB, (args.micro_batch, args.block_size), device=device),) * 2
        for _ in range(args.grad_accum)
    ]
    bf16 = use_bf16(bench_config(args, 0, False), device)
    tokens_per_step = args.micro_batch * args.block_size * args.grad_accum
    device_name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    peak = peak_flops(device_name, args.peak_tflops)
    flops_per_token = base.flops_per_token()
    checkpoint_root = args.checkpoint_dir or tempfile.mkdtemp(prefix="bench-checkpoints-")
    rows: list[dict[str, Any]] = []
    try:
        for compiled in {"off": [False], "on": [True], "both": [False, True]}[args.compile]:
            paths = build_paths(args, base, compiled, batches, device, bf16)
            measure(paths, args, tokens_per_step, device)
            if not args.no_checkpoint:
                for path in paths[1:]:
                    path.checkpoint = checkpoint_times(path, checkpoint_root, context, batches)
            plain_rate = statistics.median(paths[0].rates)
            rows.extend(row(path, plain_rate, flops_per_token, peak) for path in paths)
            for path in paths[1:]:
                assert path.engine is not None
                path.engine.engine.destroy()
            del paths
            if device.type == "cuda":
                torch.cuda.empty_cache()
    finally:
        if args.checkpoint_dir is None:
            shutil.rmtree(checkpoint_root, ignore_errors=True)
    result = {
        "device": device_name,
        "preset": args.preset,
        "params": base.num_params(non_embedding=False),
        "block_size": args.block_size,
        "micro_batch": args.micro_batch,
        "grad_accum": args.grad_accum,
        "tokens_per_step": tokens_per_step,
        "precision": "bf16" if bf16 else "fp32",
        "peak_tflops": None if peak is None else peak / 1e12,
        "repeats": args.repeats,
        "steps_per_repeat": args.steps,
        "rows": rows,
    }
    print(json.dumps(result, indent=2))
    print(markdown(rows), file=sys.stderr)
    shutdown(context)


if __name__ == "__main__":
    main()
