"""Training throughput of the trainer's DeepSpeed path against a plain PyTorch loop on the same model.

Both train the same GPT (same initial weights, same random token batches, AdamW, gradient clipping); the
measurements are interleaved (plain, DeepSpeed, plain, ...) so drift in machine load hits both alike, and the
median over repeats is reported: tokens/s, MFU (null on CPU unless --peak-tflops), the DeepSpeed/plain ratio
and, on GPU, peak memory. Single process.

    python bench/train_throughput.py                                  # CPU defaults
    python bench/train_throughput.py --preset gpt2-124m --block-size 1024 --micro-batch 16 --compile
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from trainer.config import load_config
from trainer.distributed import init_distributed, shutdown
from trainer.engine import build_engine, enable_tf32, model_config
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
    parser.add_argument("--zero-stage", type=int, default=0, choices=[0, 1, 2, 3])
    parser.add_argument("--compile", action="store_true", help="torch.compile both paths (GPU)")
    parser.add_argument(
        "--peak-tflops", type=float, default=None, help="device peak for MFU (else the GPU table)"
    )
    return parser.parse_args()


def plain_step_fn(
    model: GPT, args: argparse.Namespace, bf16: bool, batches: list[tuple[torch.Tensor, torch.Tensor]]
) -> Callable[[], torch.Tensor]:
    """The loop one would write without DeepSpeed: autocast bf16 on GPU, fused AdamW, clipping."""
    optimizer = torch.optim.AdamW(model.optimizer_groups(0.1), lr=1e-4, betas=(0.9, 0.95), fused=True)
    forward = torch.compile(model) if args.compile else model
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


def timed(step: Callable[[], torch.Tensor], steps: int, device: torch.device) -> float:
    """Seconds for `steps` optimizer steps, waiting for the device at both ends."""
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(steps):
        last = step()
    last.item()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


def main() -> None:
    args = parse_args()
    context = init_distributed()
    device = context.device
    if device.type == "cuda":
        enable_tf32()
    config = load_config(
        None,
        [
            f"model.preset={args.preset}", f"model.block_size={args.block_size}", "data.path=unused",
            "train.max_steps=1000000", "checkpoint.dir=unused", "checkpoint.every_steps=1", "output.dir=unused",
            f"train.micro_batch_size={args.micro_batch}", f"train.grad_accum_steps={args.grad_accum}",
            f"train.zero_stage={args.zero_stage}", f"train.compile={args.compile}", "train.lr=1e-4",
            "train.min_lr=1e-5", "train.warmup_steps=0", "train.grad_clip=1.0",
        ],
    )  # fmt: skip
    torch.manual_seed(0)
    plain_model = GPT(model_config(config, VOCAB)).to(device)
    ds_model = copy.deepcopy(plain_model)
    batches = [
        (torch.randint(0, VOCAB, (args.micro_batch, args.block_size), device=device),) * 2
        for _ in range(args.grad_accum)
    ]
    engine = build_engine(ds_model, config, device, world_size=1)
    paths: dict[str, Callable[[], torch.Tensor]] = {
        "plain": plain_step_fn(plain_model, args, engine.bf16, batches),
        "deepspeed": lambda: engine.train_step(batches)[0],
    }
    for step in paths.values():
        timed(step, args.warmup, device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    tokens_per_step = args.micro_batch * args.block_size * args.grad_accum
    rates: dict[str, list[float]] = {name: [] for name in paths}
    for _ in range(args.repeats):
        for name, step in paths.items():  # interleaved
            rates[name].append(args.steps * tokens_per_step / timed(step, args.steps, device))

    device_name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    peak = peak_flops(device_name, args.peak_tflops)
    flops_per_token = ds_model.flops_per_token()
    median = {name: statistics.median(values) for name, values in rates.items()}
    result = {
        "device": device_name,
        "preset": args.preset,
        "params": ds_model.num_params(non_embedding=False),
        "block_size": args.block_size,
        "tokens_per_step": tokens_per_step,
        "precision": "bf16" if engine.bf16 else "fp32",
        "zero_stage": args.zero_stage,
        "compile": args.compile,
        "repeats": args.repeats,
        "steps_per_repeat": args.steps,
        "tokens_per_sec": {name: round(value, 1) for name, value in median.items()},
        "all_tokens_per_sec": {name: [round(v, 1) for v in values] for name, values in rates.items()},
        "mfu": {name: mfu(value, flops_per_token, peak, 1) for name, value in median.items()},
        "deepspeed_over_plain": round(median["deepspeed"] / median["plain"], 4),
        "peak_memory_gib": torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None,
    }
    print(json.dumps(result, indent=2))
    shutdown()


if __name__ == "__main__":
    main()
