"""trainer.distributed: torchrun's per-process variables checked for presence and consistency before the
process group is joined (process_identity); DeepSpeed imported without MLflow (import_deepspeed)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from trainer.config import ConfigError
from trainer.distributed import ProcessIdentity, process_identity, unimportable

from .conftest import REPO

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


def test_deepspeed_is_imported_without_mlflow_which_imports_afterwards() -> None:
    """DeepSpeed's autotuner imports mlflow if it can (1.6-1.9 s of each worker's start here); the trainer's
    import of DeepSpeed leaves it out, and output.tracking's own import of mlflow works afterwards."""
    script = """
import sys
from trainer.distributed import import_deepspeed
import_deepspeed()
import deepspeed.autotuning.autotuner as autotuner
assert "deepspeed" in sys.modules and "mlflow" not in sys.modules and not autotuner.has_mlflow
import mlflow
print("mlflow", mlflow.__name__)
"""
    env = {**os.environ, "DS_ACCELERATOR": "cpu"}
    result = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300, cwd=REPO
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["mlflow", "mlflow"]


def test_an_imported_module_stays_importable() -> None:
    with unimportable("json"):  # imported already: nothing to hide
        import json

        assert json.dumps(1) == "1"
    with unimportable("trainstack_no_such_module_yet"):
        assert sys.modules["trainstack_no_such_module_yet"] is None
    assert "trainstack_no_such_module_yet" not in sys.modules
