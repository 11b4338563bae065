"""One direction of imports: no cycle among the modules of trainer/ and components/, counting every import at
any depth (a deferred import inside a function still runs, so it cannot hide a cycle)."""

from __future__ import annotations

import ast
import graphlib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("trainer", "components")


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path, modules: set[str]) -> set[str]:
    """The package's modules a file imports; `from a import b` names a.b where b is a module, else a."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = package.rsplit(".", node.level - 1)[0] if node.level else ""  # a relative import's package
            source = ".".join(part for part in (base, node.module or "") if part)
            found |= {f"{source}.{a.name}" if f"{source}.{a.name}" in modules else source for a in node.names}
    return found & modules - {name}


def import_graph() -> dict[str, set[str]]:
    files = [path for package in PACKAGES for path in (ROOT / package).rglob("*.py")]
    modules = {module_name(path) for path in files}
    return {module_name(path): imports_of(path, modules) for path in files}


def test_the_graph_sees_imports_inside_functions() -> None:
    graph = import_graph()
    assert "trainer.launch" in graph["trainer.cli"]  # imported only inside cmd_launch
    assert "trainer.checkpoint.s3" in graph["trainer.checkpoint.storage"]  # inside open_storage
    assert "trainer.checkpoint.s3_lease" in graph["trainer.checkpoint.s3"]  # from a package import a module


def test_no_import_cycle() -> None:
    try:
        graphlib.TopologicalSorter(import_graph()).prepare()
    except graphlib.CycleError as error:
        raise AssertionError(f"import cycle: {' -> '.join(error.args[1])}") from None
