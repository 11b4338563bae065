"""One direction of imports: components get what they need from each other through __main__.py as values."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

COMPONENTS = Path(__file__).resolve().parents[2] / "components"
# Shared by every component: the stack's values and their checks, and the shell helpers.
COMMON = {"components.settings", "components.shell"}
# A component's own modules (the training job's runtime, checkpoints and config; the cluster's config).
FAMILIES = [
    {"training_job", "training_runtime", "checkpoints", "training_job_config"},
    {"cluster_config", "cluster"},
]


def imported(path: Path) -> set[str]:
    """The components modules a file imports (`from components import x` counts as components.x)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module == "components":
            found |= {f"components.{alias.name}" for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("components."):
            found.add(".".join(node.module.split(".")[:2]))
    return found


@pytest.mark.parametrize(
    "name", sorted(p.stem for p in COMPONENTS.glob("*.py") if p.stem not in ("stack", "__init__"))
)
def test_no_component_imports_another(name: str) -> None:
    family = next((names for names in FAMILIES if name in names), {name})
    allowed = COMMON | {f"components.{member}" for member in family}
    assert imported(COMPONENTS / f"{name}.py") <= allowed


def test_no_module_of_the_components_is_past_400_lines() -> None:
    sizes = {path.name: len(path.read_text().splitlines()) for path in COMPONENTS.glob("*.py")}
    assert max(sizes.values()) <= 400, sizes


def test_the_config_reader_imports_no_component() -> None:
    assert imported(COMPONENTS / "settings.py") == set()
