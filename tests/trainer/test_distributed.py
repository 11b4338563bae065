"""trainer.distributed.process_identity: torchrun's per-process variables checked for presence and
consistency before the process group is joined."""

from __future__ import annotations

import pytest

from trainer.config import ConfigError
from trainer.distributed import ProcessIdentity, process_identity

TORCHRUN = {"RANK": "3", "WORLD_SIZE": "4", "LOCAL_RANK": "1", "LOCAL_WORLD_SIZE": "2",
            "MASTER_ADDR": "job-node-0-0.job", "MASTER_PORT": "29500"}  # fmt: skip


def test_not_under_torchrun_is_a_world_of_one() -> None:
    assert process_identity({}, cuda_devices=0) is None
    assert process_identity({"MASTER_PORT": "1234"}, cuda_devices=0) is None


def test_torchrun_variables() -> None:
    assert process_identity(TORCHRUN, cuda_devices=2) == ProcessIdentity(3, 4, 1, "job-node-0-0.job", 29500)


@pytest.mark.parametrize("name", ["RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"])
def test_each_missing_or_empty_variable_is_named(name: str) -> None:
    missing = {key: value for key, value in TORCHRUN.items() if key != name}
    with pytest.raises(ConfigError, match=f"^{name} is not set"):
        process_identity(missing, cuda_devices=0)
    with pytest.raises(ConfigError, match=f"^{name} is set but empty"):
        process_identity({**TORCHRUN, name: ""}, cuda_devices=0)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"RANK": "4"}, r"RANK: expected an integer from 0 to 3 \(WORLD_SIZE=4\), got '4'"),
        ({"RANK": "-1"}, "RANK: expected"),
        ({"WORLD_SIZE": "0"}, "WORLD_SIZE: expected a process count >= 1"),
        ({"LOCAL_WORLD_SIZE": "5"}, "LOCAL_WORLD_SIZE: expected a process count from 1 to WORLD_SIZE=4"),
        ({"LOCAL_RANK": "2"}, r"LOCAL_RANK: expected an integer from 0 to 1"),
        ({"MASTER_PORT": "99999"}, "MASTER_PORT: expected a TCP port 1-65535"),
        ({"MASTER_PORT": "auto"}, "MASTER_PORT: expected a TCP port 1-65535"),
    ],
)
def test_inconsistent_values_are_named(changes: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        process_identity({**TORCHRUN, **changes}, cuda_devices=0)


def test_a_local_rank_without_its_gpu_is_an_error() -> None:
    with pytest.raises(ConfigError, match=r"LOCAL_RANK \(1\) has no GPU: 1 visible"):
        process_identity(TORCHRUN, cuda_devices=1)
