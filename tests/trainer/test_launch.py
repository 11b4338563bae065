"""trainer.launch: the torchrun command from Kubeflow's PET_* variables (every value that says who the node is
checked before any work), torchrun's shutdown wait, and the exit-code mapping."""

from __future__ import annotations

import sys

import pytest

from trainer import PREEMPTED_EXIT_CODE, USAGE_EXIT_CODE
from trainer.config import ConfigError
from trainer.launch import outcome, torchrun_command, torchrun_has_shutdown_timeout


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
    ("name", "value"),
    [
        ("PET_NNODES", "two"),
        ("PET_NNODES", "0"),
        ("PET_NNODES", "3:2"),  # MIN > MAX
        ("PET_NPROC_PER_NODE", "-1"),
        ("PET_NPROC_PER_NODE", "0"),
        ("PET_MASTER_PORT", "http"),
        ("PET_MASTER_PORT", "0"),
        ("PET_MASTER_PORT", "65536"),
        ("PET_NODE_RANK", "-1"),
        ("PET_MASTER_ADDR", "two words"),
        ("TORCH_ELASTIC_SHUTDOWN_TIMEOUT", "soon"),
    ],
)
def test_bad_variable_is_named(name: str, value: str) -> None:
    with pytest.raises(ConfigError, match=f"{name}: expected .*, got '{value}'"):
        torchrun_command("c.yaml", [], {name: value})


# Issue 18 case 3: JobSet's webhook (failurePolicy Ignore on k3s) did not make the Jobs Indexed, so Kubeflow's
# PET_NODE_RANK (from the completion-index annotation) is empty on every node.
def test_an_empty_node_rank_is_an_error_not_rank_0() -> None:
    env = {
        "PET_NNODES": "2",
        "PET_NODE_RANK": "",
        "PET_MASTER_ADDR": "job-node-0-0.job",
        "PET_MASTER_PORT": "29500",
    }
    with pytest.raises(ConfigError, match=r"PET_NODE_RANK is set but empty.*completion-index.*Indexed"):
        torchrun_command("c.yaml", [], env)


@pytest.mark.parametrize(
    "name", ["PET_NNODES", "PET_NPROC_PER_NODE", "PET_NODE_RANK", "PET_MASTER_ADDR", "PET_MASTER_PORT"]
)
def test_every_identity_variable_set_but_empty_is_an_error(name: str) -> None:
    with pytest.raises(ConfigError, match=f"^{name} is set but empty"):
        torchrun_command("c.yaml", [], {name: " "})


@pytest.mark.parametrize("missing", ["PET_NODE_RANK", "PET_MASTER_ADDR", "PET_MASTER_PORT"])
def test_several_nodes_need_rank_address_and_port(missing: str) -> None:
    env = {
        "PET_NNODES": "2",
        "PET_NODE_RANK": "1",
        "PET_MASTER_ADDR": "job-node-0-0.job",
        "PET_MASTER_PORT": "29500",
    }
    del env[missing]
    with pytest.raises(ConfigError, match=f"^{missing} is not set: with PET_NNODES=2"):
        torchrun_command("c.yaml", [], env)


@pytest.mark.parametrize(("nnodes", "rank"), [("2", "2"), ("1", "1"), ("1:3", "3")])
def test_node_rank_must_be_below_the_node_count(nnodes: str, rank: str) -> None:
    env = {"PET_NNODES": nnodes, "PET_NODE_RANK": rank, "PET_MASTER_ADDR": "a", "PET_MASTER_PORT": "29500"}
    with pytest.raises(ConfigError, match=f"PET_NODE_RANK: expected an integer from 0 to .*, got '{rank}'"):
        torchrun_command("c.yaml", [], env)


def test_a_node_count_range_allows_ranks_below_its_maximum() -> None:
    env = {"PET_NNODES": "1:3", "PET_NODE_RANK": "2", "PET_MASTER_ADDR": "a", "PET_MASTER_PORT": "29500"}
    assert "--node-rank=2" in torchrun_command("c.yaml", [], env)


def test_shutdown_timeout_is_passed_to_torchrun() -> None:
    env = {"TORCH_ELASTIC_SHUTDOWN_TIMEOUT": "170"}
    command = torchrun_command("c.yaml", [], env)
    assert command[command.index("-m", 3) - 1] == "--shutdown-timeout=170"  # a torchrun option, before -m
    assert not any(
        arg.startswith("--shutdown") for arg in torchrun_command("c.yaml", [], env, shutdown_flag=False)
    )
    assert not any(arg.startswith("--shutdown") for arg in torchrun_command("c.yaml", [], {}))


def test_this_torchrun_has_the_shutdown_timeout_option() -> None:
    """torch 2.13 (the venv's) has it; launch warns and leaves it out where a torch does not."""
    assert torchrun_has_shutdown_timeout()


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
