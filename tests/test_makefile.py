"""The Makefile's targets install what they use and no more, and refuse an unsupported Python before
anything is downloaded (`make -n` and runs against a scratch virtualenv path; nothing is installed)."""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def dry_run(target: str, venv: Path, *extra: str) -> str:
    """What `make -n TARGET` would run with a virtualenv that does not exist yet."""
    result = subprocess.run(
        ["make", "-n", target, f"VENV={venv}", *extra], cwd=REPO, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


@pytest.mark.parametrize("target", ["up", "down", "check"])
def test_the_stack_targets_install_requirements_txt_only(target: str, tmp_path: Path) -> None:
    commands = dry_run(target, tmp_path / "venv")
    assert "pip install -q -r requirements.txt" in commands
    for heavy in ("torch", "requirements-dev.txt", "trainer/requirements.txt"):
        assert heavy not in commands, f"make {target} installs {heavy}"


def test_train_local_adds_the_trainer_and_test_the_development_tools(tmp_path: Path) -> None:
    train_local = dry_run("train-local", tmp_path / "venv")
    assert "pip install -q torch==2.13.0" in train_local
    assert "-r trainer/requirements.txt" in train_local
    assert "requirements-dev.txt" not in train_local
    test = dry_run("test", tmp_path / "venv")
    for part in (
        "-r requirements.txt",
        "torch==2.13.0",
        "-r trainer/requirements.txt",
        "-r requirements-dev.txt",
    ):
        assert part in test


def test_down_checks_what_destroy_runs_for_the_stack(tmp_path: Path) -> None:
    commands = dry_run("down", tmp_path / "venv", "STACK=dev")
    assert "scripts/check_prereqs.py --stack dev python pulumi docker kubectl" in commands


def test_an_unsupported_python_is_refused_in_one_line_before_the_virtualenv(tmp_path: Path) -> None:
    """A Python that says it is 3.10 (sys.version_info replaced at start-up by a sitecustomize)."""
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text("import sys\nsys.version_info = (3, 10, 12, 'final', 0)\n")
    fake = tmp_path / "python3.10"
    fake.write_text(f'#!/bin/sh\nPYTHONPATH={site} exec {sys.executable} "$@"\n')
    fake.chmod(0o755)
    venv = tmp_path / "venv"
    # No index: if the check let it through, pip fails fast instead of downloading.
    env = {**os.environ, "PIP_NO_INDEX": "1", "PIP_FIND_LINKS": str(tmp_path)}
    result = subprocess.run(
        ["make", "--no-print-directory", "stack-venv", f"VENV={venv}", f"PYTHON={fake}"],
        cwd=REPO, capture_output=True, text=True, timeout=120, env=env,
    )  # fmt: skip
    assert result.returncode != 0
    assert not venv.exists(), "a virtualenv was made for an unsupported Python"
    refusal = [line for line in result.stdout.splitlines() if line.startswith("error:")]
    assert len(refusal) == 1, result.stdout
    assert "Python 3.10.12; trainstack needs Python 3.11 to 3.14" in refusal[0]
    assert "PYTHON=python3.11" in refusal[0]


def test_pyproject_states_the_pythons_the_pins_need() -> None:
    text = (REPO / "pyproject.toml").read_text()
    assert 'requires-python = ">=3.11,<3.15"' in text
    assert 'target-version = "py311"' in text


def fake_pulumi(tmp_path: Path) -> Path:
    """A `pulumi` that prints the passphrase it was given and its arguments (as a stack output would)."""
    fake = tmp_path / "pulumi"
    fake.write_text(
        '#!/bin/sh\ncase "$*" in\n'
        # logsCommand is bash (a process substitution reads the kubeconfig secret, with the passphrase)
        "  *logsCommand*) echo 'cat <(echo \"logs with passphrase=$PULUMI_CONFIG_PASSPHRASE\")' ;;\n"
        '  *) echo "passphrase=${PULUMI_CONFIG_PASSPHRASE:-unset} args=$*" ;;\nesac\n'
    )
    fake.chmod(0o755)
    return fake


def run_make(target: str, tmp_path: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PULUMI_", "MAKE"))}
    return subprocess.run(
        ["make", "--no-print-directory", target, f"PULUMI={fake_pulumi(tmp_path)}", *extra],
        cwd=REPO, capture_output=True, text=True, timeout=60, env=env,
    )  # fmt: skip


def test_make_kubeconfig_reads_the_secret_with_the_passphrase_make_up_used(tmp_path: Path) -> None:
    """In the user's own shell the passphrase make exports is unset, and `pulumi stack output kubeconfig
    --show-secrets` fails: make kubeconfig runs it with the Makefile's, into a file only its owner reads."""
    target = tmp_path / "kube" / "trainstack-gpu"
    result = run_make("kubeconfig", tmp_path, "STACK=gpu", f"KUBECONFIG_FILE={target}")
    assert result.returncode == 0, result.stderr
    assert target.read_text() == (
        "passphrase=trainstack-dev-not-a-secret args=stack output kubeconfig --show-secrets --stack gpu\n"
    )
    assert target.stat().st_mode & 0o777 == 0o600
    assert f"export KUBECONFIG={target}" in result.stdout


def test_make_logs_runs_the_stacks_logs_command_with_the_passphrase(tmp_path: Path) -> None:
    result = run_make("logs", tmp_path, "STACK=gpu")
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-1] == "logs with passphrase=trainstack-dev-not-a-secret"


OLD_PYTHONS = [  # pyenv's interpreters older than 3.11, where this machine has them (3.6 and 2.7 do not parse 3.11's)
    path
    for path in sorted(Path.home().glob(".pyenv/versions/*/bin/python[23].*"))
    if re.fullmatch(r"python(\d)\.(\d+)", path.name) and (int(path.name[6]), int(path.name[8:])) < (3, 11)
]


@pytest.mark.parametrize("target", ["stack-venv", "check-prereqs"])
def test_a_python_too_old_to_parse_the_scripts_is_still_refused_in_one_line(
    target: str, tmp_path: Path
) -> None:
    """`make check PYTHON=python3.6` once ended in `SyntaxError: future feature annotations`: the first step
    (scripts/python_check.py) parses on any Python. Checked with the interpreter itself where one is installed
    here (pyenv), else with the grammar of the oldest Python 3 ast knows."""
    tree = ast.parse((REPO / "scripts" / "python_check.py").read_text(), feature_version=(3, 4))
    assert not [node for node in ast.walk(tree) if isinstance(node, (ast.JoinedStr, ast.ImportFrom))]
    assert not [node for node in ast.walk(tree) if isinstance(node, ast.FunctionDef) and node.returns]
    for old in OLD_PYTHONS or pytest.skip("no Python older than 3.11 installed here"):
        venv = tmp_path / old.name
        result = subprocess.run(
            ["make", "--no-print-directory", target, f"VENV={venv}", f"PYTHON={old}", "STACK=dev"],
            cwd=REPO, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert result.returncode != 0 and not venv.exists(), result.stdout
        assert "SyntaxError" not in result.stderr + result.stdout
        refusal = [line for line in result.stdout.splitlines() if line.startswith("error:")]
        assert len(refusal) == 1 and "trainstack needs Python 3.11 to 3.14" in refusal[0], result.stdout
