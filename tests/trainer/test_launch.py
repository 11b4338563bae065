"""trainer.launch: the torchrun command from Kubeflow's PET_* variables, and the exit-code mapping."""

from __future__ import annotations

import sys

import pytest

from trainer import PREEMPTED_EXIT_CODE, USAGE_EXIT_CODE
from trainer.config import ConfigError
from trainer.launch import outcome, torchrun_command


def test_command_from_kubeflow_variables() -> None:
    env = {"PET_NNODES": "2", "PET_NPROC_PER_NODE": "4", "PET_NODE_RANK": "1",
           "PET_MASTER_ADDR": "job-node-0-0.job", "PET_MASTER_PORT": "29400"}  # fmt: skip
    assert torchrun_command("/etc/trainstack/train.yaml", ["train.max_steps=5"], env) == [
        sys.executable, "-m", "torch.distributed.run", "--nnodes=2", "--nproc-per-node=4", "--node-rank=1",
        "--master-addr=job-node-0-0.job", "--master-port=29400",
        "-m", "trainer", "train", "--config", "/etc/trainstack/train.yaml", "--set", "train.max_steps=5",
    ]  # fmt: skip


def test_single_local_process_without_variables() -> None:
    command = torchrun_command("c.yaml", [], {})
    assert command[3:8][:4] == [
        "--nnodes=1",
        "--nproc-per-node=1",
        "--node-rank=0",
        "--master-addr=127.0.0.1",
    ]
    port = int(command[7].removeprefix("--master-port="))
    assert 0 < port < 65536


@pytest.mark.parametrize(
    ("name", "value"), [("PET_NNODES", "two"), ("PET_NPROC_PER_NODE", "-1"), ("PET_MASTER_PORT", "http")]
)
def test_bad_variable_is_named(name: str, value: str) -> None:
    with pytest.raises(ConfigError, match=f"{name}: expected .*, got '{value}'"):
        torchrun_command("c.yaml", [], {name: value})


@pytest.mark.parametrize(
    ("torchrun_code", "worker_codes", "signal_received", "expected"),
    [
        (0, [0, 0], None, 0),
        (1, [PREEMPTED_EXIT_CODE, PREEMPTED_EXIT_CODE], 15, PREEMPTED_EXIT_CODE),  # SIGTERM, checkpoint saved
        (1, [PREEMPTED_EXIT_CODE], None, PREEMPTED_EXIT_CODE),  # another node's pod was preempted
        (1, [USAGE_EXIT_CODE, USAGE_EXIT_CODE], None, USAGE_EXIT_CODE),
        (1, [], 15, 128 + 15),  # stopped before any worker could save
        (1, [], None, 1),  # a crash
    ],
)
def test_outcome(
    torchrun_code: int, worker_codes: list[int], signal_received: int | None, expected: int
) -> None:
    assert outcome(torchrun_code, worker_codes, signal_received) == expected
