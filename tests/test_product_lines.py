"""scripts/product_lines.py: what counts as code, and a prose-only change told from a code change."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "product_lines.py"
spec = importlib.util.spec_from_file_location("product_lines", SCRIPT)
assert spec and spec.loader
product_lines = importlib.util.module_from_spec(spec)
spec.loader.exec_module(product_lines)

PY = '"""Module."""\n\n\ndef f(x: int) -> int:\n    """Doubles."""\n    # why\n    return 2 * x\n'
SH = "#!/bin/sh\n# what\nset -eu\n\necho hi  # trailing\n"


@pytest.mark.parametrize(
    ("name", "before", "after", "same"),
    [
        ("a.py", PY, PY.replace('"""Doubles."""', '"""Twice x, as an int."""\n    # more'), True),
        ("a.py", PY, PY.replace('    """Doubles."""\n', ""), True),
        ("a.py", PY, PY.replace("2 * x", "x * 2"), False),
        (
            "a.py",
            PY,
            PY.replace('def f(x: int) -> int:\n    """Doubles."""\n', "def f(x: int) -> int:\n"),
            True,
        ),
        ("a.sh", SH, SH.replace("# what\n", "# what and why\n\n"), True),
        ("a.sh", SH, SH.replace("echo hi", "echo ho"), False),
    ],
)
def test_code_is_what_runs_without_docstrings_comments_and_blank_lines(
    name: str, before: str, after: str, same: bool
) -> None:
    assert (product_lines.code(name, before) == product_lines.code(name, after)) is same


def test_docstring_lines_count_every_documented_node() -> None:
    assert product_lines.docstring_lines(PY) == 2


@pytest.mark.parametrize(
    "args", [["no-such-ref"], ["--code-changed", "no-such-ref"], ["HEAD", "no-such-ref"]]
)
def test_a_ref_that_is_no_commit_gets_one_line_and_exit_2(args: list[str]) -> None:
    answer = subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True)
    assert answer.returncode == 2 and not answer.stdout
    assert (
        answer.stderr.splitlines()[-1]
        == "product_lines.py: error: 'no-such-ref' is not a commit of this repository"
    )
    assert "Traceback" not in answer.stderr
