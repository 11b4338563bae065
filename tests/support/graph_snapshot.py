"""The mock graph of every Pulumi.<stack>.yaml as JSON, to show that a refactoring leaves the program unchanged.

    python -m tests.support.graph_snapshot DIR          # writes DIR/<stack>.json for every stack file
    python -m tests.support.graph_snapshot DIR --diff   # compares the current graphs with DIR's, one line per difference

Each resource is recorded by type and name with its inputs (secrets stay wrapped, so secrecy is compared
too), parent, provider, dependencies and resource options, and the stack's outputs. What differs between
two checkouts or two machines but not between two programs is replaced by a placeholder: the repository
path and the stand-ins of tests.support.stack_helpers (an SSH key, a fake API server). Run it before a change, keep the directory, run it
with --diff after.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import tempfile
from pathlib import Path
from typing import Any

from tests.support.stack_helpers import REPO_ROOT, StackRun, run_stack, stack_files, stack_name, stand_ins

HF_TOKEN = "hf_graph_snapshot_token"
# The mock engine's command ids end in a hash of the inputs' repr, whose key order varies between processes;
# a command's inputs are compared anyway, so its id (and the cluster identity made of ids) need not be.
_COMMAND_ID = re.compile(r"(-id)-[0-9a-f]{8}\b")


def _normalise(value: Any, replacements: dict[str, str]) -> Any:
    if isinstance(value, str):
        for old, new in replacements.items():
            value = value.replace(old, new)
        return _COMMAND_ID.sub(r"\1-<hash>", value)
    if isinstance(value, dict):
        return {key: _normalise(item, replacements) for key, item in value.items()}
    if isinstance(value, list):
        return [_normalise(item, replacements) for item in value]
    return value


def graph(run: StackRun, replacements: dict[str, str]) -> dict[str, Any]:
    """A stack run as plain JSON data, resources keyed by `type name`."""
    resources = {
        f"{resource.type} {resource.name}": {
            "parent": resource.parent,
            "provider": resource.provider.rsplit("::", 1)[0],
            "dependencies": sorted(resource.dependencies),
            "custom": resource.custom,
            "inputs": resource.inputs,
            "replace_on_changes": sorted(resource.replace_on_changes),
            "delete_before_replace": resource.delete_before_replace,
            "additional_secret_outputs": sorted(resource.additional_secret_outputs),
        }
        for resource in run.resources
    }
    return _normalise({"resources": resources, "outputs": run.outputs}, replacements)


def snapshot(scratch: Path) -> dict[str, dict[str, Any]]:
    """Every stack's graph, with the stand-ins of tests.support.stack_helpers (files in scratch)."""
    graphs = {}
    for path in stack_files():
        stack = stack_name(path)
        with stand_ins(stack, scratch) as local:
            run = run_stack(stack, local.config, secrets={"hfToken": HF_TOKEN})
            graphs[stack] = graph(run, {str(REPO_ROOT): "<repo>", **local.placeholders})
    return graphs


def differences(before: Any, after: Any, where: str = "") -> list[str]:
    """One line per path at which two JSON values differ."""
    if isinstance(before, dict) and isinstance(after, dict):
        lines = []
        for key in sorted(set(before) | set(after)):
            path = f"{where}/{key}"
            if key not in after:
                lines.append(f"{path}: removed")
            elif key not in before:
                lines.append(f"{path}: added")
            else:
                lines += differences(before[key], after[key], path)
        return lines
    return [] if before == after else [f"{where}: changed"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("directory", type=Path)
    parser.add_argument("--diff", action="store_true", help="compare with the snapshot in directory")
    options = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as keys:
        graphs = snapshot(Path(keys))
    if not options.diff:
        options.directory.mkdir(parents=True, exist_ok=True)
        for stack, data in graphs.items():
            (options.directory / f"{stack}.json").write_text(
                json.dumps(data, indent=1, sort_keys=True) + "\n"
            )
        print(f"wrote {len(graphs)} stack graphs to {options.directory}")
        return 0
    lines = []
    for stack, data in graphs.items():
        stored = options.directory / f"{stack}.json"
        if not stored.is_file():
            lines.append(f"{stack}: no snapshot")
            continue
        lines += [f"{stack}{line}" for line in differences(json.loads(stored.read_text()), data)]
    print("\n".join(lines) if lines else f"{len(graphs)} stack graphs identical")
    return 1 if lines else 0


if __name__ == "__main__":
    sys.exit(main())
