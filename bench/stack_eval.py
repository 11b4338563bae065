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
    from tests.support.stack_helpers import run_stack, stack_files, stack_name, stand_ins

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=5, help="timed evaluations per stack (default 5)")
    options = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        print(f"imports: {IMPORT_SECONDS:.3f} s")
        print(f"{'stack':<10} {'resources':>9} {'first s':>8} {'best s':>8} {'median s':>9}")
        for path in stack_files():
            stack = stack_name(path)
            # What a stack file names on the operator's machine (an SSH key, a cluster) gets a stand-in; an
            # existing cluster's time includes its kubeconfig check against a local fake API server.
            with stand_ins(stack, Path(scratch)) as local:
                started = time.perf_counter()
                resources = len(run_stack(stack, local.config).resources)
                first = time.perf_counter() - started
                times = []
                for _ in range(options.repeat):
                    started = time.perf_counter()
                    run_stack(stack, local.config)
                    times.append(time.perf_counter() - started)
            print(
                f"{stack:<10} {resources:>9} {first:>8.3f} {min(times):>8.3f} {statistics.median(times):>9.3f}"
            )


if __name__ == "__main__":
    main()
