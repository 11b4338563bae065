"""Issue 26's time-scaled case: a preparation longer than the process-group timeout. Preparation runs
before the process group (local rank 0 tokenizes, the other ranks wait on the manifest file), so no rank
waits on a collective while it runs and training starts once it is done."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import REPO, TINY_CONFIG, run_overrides, trainer_env

# Runs under torchrun as each rank: a 10 s process-group timeout, and tokenization that takes 8 s a
# document (4 documents: 32 s, three times the timeout). On main the same patch goes to
# trainer.dataset.tokenize, which local rank 0 ran while the other rank waited in a collective.
SLOW_RANK = r"""
import sys, time
from datetime import timedelta
import trainer.distributed
trainer.distributed.PROCESS_GROUP_TIMEOUT = timedelta(seconds=10)
try:
    import trainer.prepare as slowed
    name = "tokenize_unit"
except ImportError:
    import trainer.dataset as slowed
    name = "tokenize"
real = getattr(slowed, name)
def slow(*args, **kwargs):
    time.sleep(8 * (4 if name == "tokenize" else 1))
    return real(*args, **kwargs)
setattr(slowed, name, slow)
from trainer.cli import main
sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.slow
def test_a_preparation_longer_than_the_process_group_timeout_trains(tmp_path: Path) -> None:
    script = tmp_path / "slow_rank.py"
    script.write_text(SLOW_RANK)
    overrides = run_overrides(tmp_path, train__max_steps=2, data__workers=1, output__log_every=1)
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2",
               str(script), "train", "--config", str(TINY_CONFIG), *overrides]  # fmt: skip
    result = subprocess.run(command, cwd=REPO, env=trainer_env(), capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-4000:]
    events = [json.loads(line) for line in (tmp_path / "output" / "metrics.jsonl").read_text().splitlines()]
    start = next(e for e in events if e["event"] == "start")
    assert start["world_size"] == 2 and start["startup_s"] > 30  # the 32 s preparation came first
    assert [e["step"] for e in events if e["event"] == "train"] == [1, 2]
    assert len(list((tmp_path / "cache").glob("tokens-*/shard_*.bin"))) == 4
