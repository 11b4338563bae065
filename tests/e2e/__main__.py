"""`make e2e`: the real end-to-end run, then real failures and real scale, on the test cluster.

    python -m tests.e2e [--keep] [--nodes N] [--no-faults] [--only object_storage|clusterops|data|kind|speed]

After the test cluster's phases, once it is down, the `dev` stack's own kind cluster (tests/e2e/kind_run.py):
`up`, training, a second `up`, a rollout, `destroy`, then a 2-node kind stack (`--only kind`: those alone).

`--only speed`: `up`, a code change's `up` and a preemption on the 1-node stack, each with its timeline
(tests/e2e/timing.py), then `destroy`.

Writes runs/e2e/report.json (after every phase) and prints a short summary. Exits 1 when any check failed
(each is listed under `failures`), 2 when the toolchain `make e2e-toolchain` builds is not complete, 3 when
another run holds this machine's lock or Docker's filesystem lacks the free space the run needs (`MIN_FREE_GIB`,
`KIND_MIN_FREE_GIB` with kind); those before anything starts. What an interrupted earlier run left (its test
cluster, its kind clusters) is removed first, so its gigabytes do not count against this run.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from tests.e2e.clusterops import clusterops
from tests.e2e.data_source import data_source
from tests.e2e.faults import preemption, run_faults
from tests.e2e.harness import (
    CACHE,
    MIN_FREE_GIB,
    REPO_ROOT,
    DiskWatch,
    disk_problem,
    docker_root,
    hold_run_lock,
    remove_test_cluster,
    toolchain_complete,
)
from tests.e2e.kind_run import KIND_MIN_FREE_GIB, kind_cleanup, kind_run
from tests.e2e.object_storage import object_storage
from tests.e2e.real_run import Run


def speed(run: Run, base: str) -> None:
    """The three timelines on one 1-node stack: `up`, a code change's `up`, a preemption; then `destroy`."""
    run.up(base)
    if run.report.data["up"].get("ok"):
        run.wait_complete(1200)
        run.rollout()
        preemption(run)
    run.destroy()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keep", action="store_true", help="leave the test cluster running afterwards")
    parser.add_argument("--nodes", type=int, default=2, help="nodes of the test cluster (default 2)")
    parser.add_argument(
        "--no-faults", action="store_true", help="without the fault scenarios (tests/e2e/faults.py)"
    )
    parser.add_argument(
        "--only",
        choices=["object_storage", "clusterops", "data", "kind", "speed"],
        help="only this scenario (on a fresh test cluster; kind: the dev stack's own kind cluster instead)",
    )
    args = parser.parse_args()
    complete, answer = toolchain_complete()
    if not complete:
        print(f"e2e: the toolchain is not complete ({answer or 'run make e2e-toolchain'})", file=sys.stderr)
        return 2
    lock = hold_run_lock()
    if lock is None:
        print(
            f"e2e: not started: another run holds {CACHE / 'e2e.lock'}; wait for it to end", file=sys.stderr
        )
        return 3
    left = remove_test_cluster() + kind_cleanup()
    if left:
        print(f"e2e: removed what an interrupted earlier run left: {', '.join(left)}")
    docker_disk = docker_root()
    problem = disk_problem(docker_disk, KIND_MIN_FREE_GIB if args.only in (None, "kind") else MIN_FREE_GIB)
    if problem:
        print(f"e2e: not started: {problem}", file=sys.stderr)
        return 3
    disk = DiskWatch(docker_disk)
    disk.start()
    (CACHE / "run").mkdir(parents=True, exist_ok=True)
    run_dir = Path(tempfile.mkdtemp(prefix="trainstack-e2e-", dir=CACHE / "run"))
    run = Run(run_dir, args.nodes)
    commit = subprocess.run(
        ["git", "describe", "--always", "--dirty"], cwd=REPO_ROOT, capture_output=True, text=True
    ).stdout.strip()
    run.report.data.update(
        date=datetime.now(UTC).isoformat(timespec="seconds"),
        commit=commit,
        cluster_kind={None: "existing, kind", "kind": "kind"}.get(args.only, "existing"),
        run_dir=str(run_dir),
    )
    started = time.monotonic()
    cluster_stopped = False
    try:
        run.versions()
        if args.only != "kind":
            run.start_cluster()
        base = None
        if args.only != "kind" and run.report.data["cluster"].get("ok"):
            base = run.base_image()
            if not args.only:
                run.up(base)
                if run.report.data["up"].get("ok"):
                    run.check_outputs()
                    run.check_training()
                    run.rollout()
                run.destroy()
                if not args.no_faults:
                    run_faults(run, base)
            if args.only in (None, "object_storage"):
                object_storage(run, base)
            if args.only in (None, "clusterops"):
                clusterops(run, base)
            if args.only in (None, "data"):
                data_source(run, base)
            if args.only == "speed":
                speed(run, base)
        if args.only in (None, "kind"):
            # kind's clusters after the test cluster is down: the two never share the 2 cores and the disk.
            if args.only is None:
                run.stop_cluster(args.keep)
                cluster_stopped = True
            kind_run(run, base)
    finally:
        run.report.data["total_seconds"] = round(time.monotonic() - started, 1)
        run.report.data["disk"] = disk.stop()
        run.report.save()
        if not cluster_stopped:
            run.stop_cluster(args.keep)
    failures = run.report.failures
    print(
        f"e2e: {'FAILED' if failures else 'passed'} in {run.report.data['total_seconds']} s; "
        f"report: {run.report.path}; commands: {run.sh.log_path}"
    )
    for failure in failures:
        print(f"  - {failure.splitlines()[0]}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
