"""The product's lines at a commit (components/, trainer/, __main__.py: .py and .sh), and how many are prose.

    .venv/bin/python scripts/product_lines.py [REF ...]   (default HEAD)

Docstrings are found with `ast` (a module's, class's or function's first statement when it is a string);
comments are whole `#` lines other than a shebang; code is every other non-blank line.
"""

from __future__ import annotations

import ast
import subprocess
import sys

DOCUMENTED = (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)


def git(*args: str) -> str:
    return subprocess.run(["git", *args], capture_output=True, text=True, check=True).stdout


def docstring_lines(source: str) -> int:
    lines = 0
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, DOCUMENTED) and node.body and isinstance(node.body[0], ast.Expr):
            value = node.body[0].value
            if isinstance(value, ast.Constant) and isinstance(value.value, str):
                lines += (node.body[0].end_lineno or node.body[0].lineno) - node.body[0].lineno + 1
    return lines


def count(ref: str) -> dict[str, int]:
    files = git("ls-tree", "-r", "--name-only", ref, "--", "components", "trainer", "__main__.py").split()
    totals = dict.fromkeys(("total", "docstring", "comment", "blank"), 0)
    for name in (name for name in files if name.endswith((".py", ".sh"))):
        source = git("show", f"{ref}:{name}")
        lines = source.splitlines()
        totals["total"] += len(lines)
        totals["blank"] += sum(1 for line in lines if not line.strip())
        totals["comment"] += sum(
            1 for line in lines if line.lstrip().startswith("#") and not line.startswith("#!")
        )
        totals["docstring"] += docstring_lines(source) if name.endswith(".py") else 0
    totals["code"] = totals["total"] - totals["docstring"] - totals["comment"] - totals["blank"]
    return totals


if __name__ == "__main__":
    for ref in sys.argv[1:] or ["HEAD"]:
        print(ref, " ".join(f"{key} {value}" for key, value in count(ref).items()))
