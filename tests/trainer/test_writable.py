"""Directories a run cannot write to: exit 2 and one line naming the key, before anything is written
(issue 25 case 3: a read-only mount, a path under a file and /proc ended in a 28-line traceback)."""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

import pytest

from tests.support.as_user import run_as
from trainer.config import load_config
from trainer.writable import PROBE_PREFIX, directory_problem, written_directories

from .conftest import TINY_CONFIG, assert_clean_failure, run, run_overrides, trainer_command


def test_a_writable_directory_passes_and_the_probe_leaves_nothing(tmp_path: Path) -> None:
    assert directory_problem("output.dir", str(tmp_path)) is None
    assert directory_problem("output.dir", str(tmp_path / "not" / "yet")) is None
    assert list(tmp_path.iterdir()) == []


def test_a_path_under_a_file_and_a_file(tmp_path: Path) -> None:
    (tmp_path / "f").write_text("x")
    assert directory_problem("checkpoint.dir", str(tmp_path / "f" / "ckpt")) == (
        f"checkpoint.dir: {tmp_path}/f/ckpt cannot be a directory: {tmp_path}/f is a file; name a directory"
    )
    assert "cannot be a directory: it is a file" in str(directory_problem("output.dir", str(tmp_path / "f")))


def test_proc_takes_no_new_directory() -> None:
    problem = directory_problem("data.cache_dir", "/proc/cache")
    assert problem is not None
    assert problem.startswith(
        "data.cache_dir: /proc/cache is not writable: /proc: nothing can be created there"
    )


def probe_as_non_root(directory: str) -> str | None:
    """directory_problem as a user that cannot pass permission bits: nobody when the tests run as root (root
    ignores them), else this user."""
    uid = 65534 if os.geteuid() == 0 else os.geteuid()
    return json.loads(run_as(uid, lambda: json.dumps(directory_problem("output.dir", directory))))


def test_a_read_only_directory() -> None:
    base = Path(
        tempfile.mkdtemp(prefix="trainstack-ro-", dir="/tmp")
    )  # not pytest's 0700 tree: nobody reaches it
    try:
        base.chmod(0o555)
        problem = probe_as_non_root(str(base / "out"))
        assert problem == (
            f"output.dir: {base}/out is not writable: {base}: Permission denied; name a directory this user can write"
        )
        assert list(base.iterdir()) == []
    finally:
        base.chmod(0o755)
        shutil.rmtree(base)


def test_every_written_directory_is_checked(tmp_path: Path) -> None:
    config = load_config(TINY_CONFIG, [f"output.dir={tmp_path}/o", "output.tracking=mlflow",
                                       f"output.tracking_uri=sqlite:///{tmp_path}/db/mlflow.db"])  # fmt: skip
    assert set(written_directories(config)) == {
        "output.dir",
        "data.cache_dir",
        "checkpoint.dir",
        "output.tracking_uri",
    }
    assert written_directories(config)["output.tracking_uri"] == f"{tmp_path}/db"
    s3 = load_config(TINY_CONFIG, ["checkpoint.dir=s3://bucket/run"])
    assert "checkpoint.dir" not in written_directories(s3)


@pytest.mark.slow  # `python -m trainer` in subprocesses
@pytest.mark.parametrize("command", ["train", "validate", "launch"])
@pytest.mark.parametrize("key", ["checkpoint.dir", "output.dir", "data.cache_dir"])
def test_the_commands_stop_in_one_line_before_writing(tmp_path: Path, command: str, key: str) -> None:
    (tmp_path / "file").write_text("x")
    overrides = run_overrides(tmp_path / "run", **{key.replace(".", "__"): tmp_path / "file" / "sub"})
    result = run(trainer_command(command, TINY_CONFIG, overrides))
    assert_clean_failure(
        result, f"{key}: {tmp_path}/file/sub cannot be a directory: {tmp_path}/file is a file"
    )
    assert not (tmp_path / "run").exists()
    assert not any(name.startswith(PROBE_PREFIX) for name in os.listdir(tmp_path))


@pytest.mark.slow  # a `python -m trainer` subprocess
def test_plot_names_an_output_it_cannot_write(tmp_path: Path) -> None:
    (tmp_path / "metrics.jsonl").write_text('{"event": "train", "step": 1, "loss": 5.0}\n')
    result = run([sys.executable, "-m", "trainer", "plot", "--metrics", str(tmp_path / "metrics.jsonl"),
                  "--out", "/proc/plots/loss.png"])  # fmt: skip
    assert_clean_failure(result, "--out: /proc/plots is not writable: /proc: nothing can be created there")
