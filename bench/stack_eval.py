"""Evaluation time of the Pulumi program under the SDK's mock engine, per stack file.

    .venv/bin/python bench/stack_eval.py [--repeat N]

Prints the time to import the program's modules (the components, with the Pulumi and provider SDKs they
use: paid once per process), then for every Pulumi.<stack>.yaml the number of resources the program registers
and the time one evaluation takes: its first run, then best and median of N more in the same process. Goal:
under 1 s per stack.
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

# What the program imports: every module of the components package (each brings the provider SDKs it uses), so
# the list follows the code instead of naming SDKs that requirements.txt may no longer install.
started = time.perf_counter()
components = importlib.import_module("components")
for module in pkgutil.walk_packages(components.__path__, "components."):
    importlib.import_module(module.name)
IMPORT_SECONDS = time.perf_counter() - started


def main() -> None:
    from tests.stack_helpers import run_stack, stack_config, stack_files, stack_name

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=5, help="timed evaluations per stack (default 5)")
    options = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        # Remote stacks name an SSH key on the operator's machine; the benchmark uses a throwaway one.
        key = Path(scratch) / "id_ed25519"
        key.write_text("benchmark key\n")
        print(f"imports: {IMPORT_SECONDS:.3f} s")
        print(f"{'stack':<10} {'resources':>9} {'first s':>8} {'best s':>8} {'median s':>9}")
        for path in stack_files():
            stack = stack_name(path)
            overrides = (
                {"sshPrivateKeyPath": str(key)} if stack_config(stack).get("k3sMode") == "remote" else {}
            )
            started = time.perf_counter()
            resources = len(run_stack(stack, overrides).resources)
            first = time.perf_counter() - started
            times = []
            for _ in range(options.repeat):
                started = time.perf_counter()
                run_stack(stack, overrides)
                times.append(time.perf_counter() - started)
            print(
                f"{stack:<10} {resources:>9} {first:>8.3f} {min(times):>8.3f} {statistics.median(times):>9.3f}"
            )


if __name__ == "__main__":
    main()
