"""The command line: each bad config or bad data gives exit 2 and one clear line, no traceback."""

from __future__ import annotations

import socket
import sys
import time
from pathlib import Path

import pytest

from .conftest import TINY_CONFIG, assert_clean_failure, run, run_overrides, trainer_command

# Every test here runs `python -m trainer` in a subprocess (about 0.7 s each, 17 of them).
pytestmark = pytest.mark.slow


@pytest.mark.parametrize("command", ["train", "validate", "print-config", "launch"])
@pytest.mark.parametrize(
    ("overrides", "fragments"),
    [
        (["--set", "train.max_steps=many"], ["train.max_steps: expected integer, got str 'many'"]),
        (["--set", "train.warmup=5"], ["unknown key train.warmup", "warmup_steps"]),
        (["--set", "model.preset=gpt5"], ["model.preset: must be one of", "gpt2-124m"]),
    ],
)
def test_bad_config(command: str, overrides: list[str], fragments: list[str]) -> None:
    assert_clean_failure(run(trainer_command(command, TINY_CONFIG, overrides)), *fragments)


def test_missing_config_file() -> None:
    assert_clean_failure(
        run(trainer_command("train", Path("/nope.yaml"), [])), "config file not found: /nope.yaml"
    )


def test_launch_bad_kubeflow_variable() -> None:
    result = run(trainer_command("launch", TINY_CONFIG, []), PET_NNODES="lots")
    assert_clean_failure(result, "PET_NNODES: expected a node count N >= 1 or a range MIN:MAX", "got 'lots'")


def test_launch_stops_at_once_on_an_empty_node_rank() -> None:
    """Issue 18 case 3: PET_NNODES=2 PET_NODE_RANK= made every node rank 0, and the rendezvous hung."""
    started = time.monotonic()
    result = run(trainer_command("launch", TINY_CONFIG, []), PET_NNODES="2", PET_NODE_RANK="")
    assert_clean_failure(result, "PET_NODE_RANK is set but empty", "Indexed")
    assert time.monotonic() - started < 30  # not a rendezvous timeout (torchrun waits 900 s by default)


def test_train_under_torchrun_names_a_missing_identity_variable() -> None:
    result = run(trainer_command("train", TINY_CONFIG, []), RANK="1", WORLD_SIZE="2", LOCAL_RANK="1",
                 MASTER_ADDR="127.0.0.1")  # fmt: skip
    assert_clean_failure(result, "MASTER_PORT is not set: under torchrun every process needs")


@pytest.mark.parametrize(
    ("settings", "fragments"),
    [
        ({"data__path": "/no/such/dir"}, ["data.path: no such file or directory: /no/such/dir"]),
        ({"data__encoding": "klingon"}, ["data.encoding: unknown encoding 'klingon'", "bytes"]),
        ({"data__path": "SHORT"}, ["too short for model.block_size=64"]),
    ],
)
def test_bad_data(tmp_path: Path, settings: dict[str, str], fragments: list[str]) -> None:
    short = tmp_path / "short.txt"
    short.write_text("Exeunt.")
    settings = {k: str(short) if v == "SHORT" else v for k, v in settings.items()}
    result = run(trainer_command("train", TINY_CONFIG, run_overrides(tmp_path, **settings)))
    assert_clean_failure(result, *fragments)
    assert not (tmp_path / "output").exists() and not (tmp_path / "checkpoints").exists()


@pytest.mark.parametrize("command", ["train", "validate", "print-config", "launch"])
@pytest.mark.parametrize(
    ("overrides", "fragments"),
    [
        (["--set", "train.stop_at=accuracy>0.9"], ["train.stop_at: unknown metric 'accuracy'", "val_loss"]),
        (
            ["--set", "output.metrics_port=99999"],
            ["output.metrics_port: must be >= 1 and <= 65535, got 99999"],
        ),
        (["--set", "output.tracking=tensorboard"], ["output.tracking: must be one of none, mlflow"]),
    ],
)
def test_bad_new_keys(command: str, overrides: list[str], fragments: list[str], tmp_path: Path) -> None:
    result = run(trainer_command(command, TINY_CONFIG, [*run_overrides(tmp_path), *overrides]))
    assert_clean_failure(result, *fragments)
    assert not (tmp_path / "output").exists() and not (tmp_path / "checkpoints").exists()


@pytest.mark.slow
def test_metrics_port_in_use_is_one_line_before_anything_is_written(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("0.0.0.0", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run(
            trainer_command("train", TINY_CONFIG, run_overrides(tmp_path, output__metrics_port=port))
        )
    assert_clean_failure(result, f"output.metrics_port: cannot serve /metrics on 0.0.0.0:{port}", "in use")
    assert not (tmp_path / "output").exists() and not (tmp_path / "checkpoints").exists()


# A Python without the trainer's packages, as the stack's venv (make up, make check builds only that layer).
WITHOUT_TORCH = (
    "import runpy, sys; sys.modules.update(numpy=None, torch=None); "
    "sys.argv[0] = 'trainer'; runpy.run_module('trainer', run_name='__main__')"
)


def test_train_without_its_packages_names_make_trainer_venv(tmp_path: Path) -> None:
    """README's `python -m trainer train` in a venv lacking numpy/torch: one line, not a traceback."""
    args = [sys.executable, "-c", WITHOUT_TORCH, "train", "--config", str(TINY_CONFIG)]
    result = run([*args, *run_overrides(tmp_path)])
    assert_clean_failure(result, "is not installed in", "make trainer-venv")
    assert result.stderr.split()[1] in {"numpy", "torch"}, result.stderr
    printed = run([sys.executable, "-c", WITHOUT_TORCH, "print-config", "--config", str(TINY_CONFIG)])
    assert printed.returncode == 0 and "max_steps" in printed.stdout, printed.stderr  # needs neither


def test_prepare_refuses_a_negative_worker_count() -> None:
    """--workers -1 ran with every CPU while data.workers=-1 is refused."""
    result = run(trainer_command("prepare", TINY_CONFIG, ["--workers", "-1"]))
    assert_clean_failure(result, "--workers: expected a process count >= 0, got -1")
