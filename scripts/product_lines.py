"""The product's lines at a commit (components/, trainer/, __main__.py: .py and .sh), and how many are prose.

    .venv/bin/python scripts/product_lines.py [REF ...]               (default HEAD)
    .venv/bin/python scripts/product_lines.py --code-changed BASE [HEAD]

The second form lists the product files whose code differs between two commits beyond docstrings, comments and
blank lines (Python: the AST without docstrings; shell: the lines that are neither blank nor comments), and
exits 1 if any does: a prose-only change leaves the program as it was.

Docstrings are found with `ast` (a module's, class's or function's first statement when it is a string);
comments are whole `#` lines other than a shebang; code is every other non-blank line.
"""

from __future__ import annotations

import argparse
import ast
import signal
import subprocess
import sys
from collections.abc import Iterator

DocumentedNode = ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef


def git(*args: str) -> str:
    return subprocess.run(["git", *args], capture_output=True, text=True, check=True).stdout


def documented(tree: ast.AST) -> Iterator[DocumentedNode]:
    """The modules, classes and functions whose first statement is a docstring."""
    for node in ast.walk(tree):
        if isinstance(node, DocumentedNode) and node.body and isinstance(node.body[0], ast.Expr):
            value = node.body[0].value
            if isinstance(value, ast.Constant) and isinstance(value.value, str):
                yield node


def docstring_lines(source: str) -> int:
    return sum(
        (node.body[0].end_lineno or node.body[0].lineno) - node.body[0].lineno + 1
        for node in documented(ast.parse(source))
    )


def files_at(ref: str) -> set[str]:
    names = git("ls-tree", "-r", "--name-only", ref, "--", "components", "trainer", "__main__.py").split()
    return {name for name in names if name.endswith((".py", ".sh"))}


def code(name: str, source: str) -> object:
    """What of a file runs: the AST without docstrings (Python), the non-blank, non-comment lines (shell)."""
    if name.endswith(".sh"):
        return [
            line.strip() for line in source.splitlines() if line.strip() and not line.lstrip().startswith("#")
        ]
    tree = ast.parse(source)
    for node in list(documented(tree)):
        node.body = node.body[1:] or [ast.Pass()]
    return ast.dump(tree)


def code_changed(base: str, head: str) -> list[str]:
    before, after = files_at(base), files_at(head)
    changed = sorted(before ^ after)
    for name in sorted(before & after):
        if code(name, git("show", f"{base}:{name}")) != code(name, git("show", f"{head}:{name}")):
            changed.append(name)
    return changed


def count(ref: str) -> dict[str, int]:
    totals = dict.fromkeys(("total", "docstring", "comment", "blank"), 0)
    for name in sorted(files_at(ref)):
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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("refs", nargs="*", default=["HEAD"], help="commits to count (default HEAD)")
    parser.add_argument("--code-changed", metavar="BASE", help="list the files whose code differs from BASE")
    args = parser.parse_args()
    for ref in [args.code_changed or "HEAD", *args.refs]:
        if subprocess.run(
            ["git", "rev-parse", "--verify", "-q", f"{ref}^{{commit}}"], capture_output=True
        ).returncode:
            parser.error(f"{ref!r} is not a commit of this repository")
    if args.code_changed:
        changed = code_changed(args.code_changed, args.refs[0])
        print("\n".join(changed) or "no product code changed")
        return 1 if changed else 0
    for ref in args.refs:
        print(ref, " ".join(f"{key} {value}" for key, value in count(ref).items()))
    return 0


if __name__ == "__main__":
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)  # `| head` ends the listing quietly, as for any command
    sys.exit(main())
