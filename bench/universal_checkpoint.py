"""Can DeepSpeed's universal checkpoints (deepspeed.checkpoint.ds_to_universal) carry this trainer's resizes?

One process (gloo, CPU), the tiny GPT: for each ZeRO stage given, 3 steps, DeepSpeed's own save_checkpoint,
then the offline conversion ds_to_universal (as is, and with --inject_missing_state); prints whether it
converted, the error if not, and the seconds it took. The trainer runs ZeRO 0 on one rank (trainer.engine.zero_stage), so a 1 <-> N rank resize
needs a ZeRO 0 checkpoint converted.

    .venv/bin/python bench/universal_checkpoint.py [STAGE ...]   (default: 0 1)
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time

import torch
from deepspeed.checkpoint import ds_to_universal

from trainer.config import load_config
from trainer.distributed import init_distributed, shutdown
from trainer.engine import build_engine, model_config
from trainer.model import GPT

SETTINGS = ["model.preset=tiny", "model.block_size=32", "data.path=x", "train.max_steps=50", "checkpoint.dir=x", "checkpoint.every_steps=1",
            "output.dir=x", "train.warmup_steps=2", "train.micro_batch_size=2", "train.precision=fp32"]  # fmt: skip


def main(stages: list[int]) -> None:
    context = init_distributed()
    batch = [(torch.randint(0, 100, (2, 32)), torch.randint(0, 100, (2, 32)))]
    for stage in stages:
        config = load_config(None, [*SETTINGS, f"train.zero_stage={stage}"])
        engine = build_engine(GPT(model_config(config, 100)), config, context.device, 1, stage=stage)
        for _ in range(3):
            engine.train_step(batch)
        with tempfile.TemporaryDirectory() as work:
            engine.engine.save_checkpoint(work, tag="step_3")
            # True: --inject_missing_state (this trainer writes no Megatron universal_checkpoint_info)
            for inject in (False, True):
                args = argparse.Namespace(input_folder=f"{work}/step_3", output_folder=f"{work}/universal-{inject}",
                                          num_extract_workers=1, num_merge_workers=1, keep_temp_folder=False,
                                          strict=True, inject_missing_state=inject)  # fmt: skip
                started = time.perf_counter()
                try:
                    ds_to_universal.main(args)
                    outcome = "converted"
                except Exception as error:  # the outcome is what is measured
                    outcome = f"{type(error).__name__}: {error}"
                seconds = round(time.perf_counter() - started, 2)
                print(json.dumps({"zero_stage": stage, "inject_missing_state": inject, "outcome": outcome,
                                  "seconds": seconds}), flush=True)  # fmt: skip
        engine.engine.destroy()
    shutdown(context)


if __name__ == "__main__":
    main([int(stage) for stage in sys.argv[1:]] or [0, 1])
