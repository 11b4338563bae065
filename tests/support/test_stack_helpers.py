"""tests/support/stack_helpers.py: which stack files the mock-engine tests run."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.support import stack_helpers


def test_stack_files_are_the_tracked_ones_not_a_users_own(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    (tmp_path / "Pulumi.dev.yaml").write_text("config: {}\n")
    subprocess.run(["git", "-C", str(tmp_path), "add", "Pulumi.dev.yaml"], check=True)
    (tmp_path / "Pulumi.mine.yaml").write_text("encryptionsalt: v1:x\n")  # `pulumi stack init mine` wrote it
    monkeypatch.setattr(stack_helpers, "REPO_ROOT", tmp_path)
    assert stack_helpers.stack_files() == [tmp_path / "Pulumi.dev.yaml"]


def test_outside_a_git_checkout_every_stack_file_there(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "Pulumi.dev.yaml").write_text("config: {}\n")
    (tmp_path / "Pulumi.gpu.yaml").write_text("config: {}\n")
    monkeypatch.setattr(stack_helpers, "REPO_ROOT", tmp_path)
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path.parent))
    assert stack_helpers.stack_files() == [tmp_path / "Pulumi.dev.yaml", tmp_path / "Pulumi.gpu.yaml"]


def test_in_an_untracked_copy_inside_a_checkout_every_stack_file_there(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # mutmut's copy of the repository under runs/mutation/ (ignored): git lists no stack file there.
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    copy = tmp_path / "runs" / "mutants"
    copy.mkdir(parents=True)
    (copy / "Pulumi.dev.yaml").write_text("config: {}\n")
    monkeypatch.setattr(stack_helpers, "REPO_ROOT", copy)
    assert stack_helpers.stack_files() == [copy / "Pulumi.dev.yaml"]
