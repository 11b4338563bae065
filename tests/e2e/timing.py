"""The real run's timelines (tests/e2e/timeline.py builds them): what `up`, a code change's `up` and a
preemption wait for, collected while they run, printed and kept under `timeline` in runs/e2e/report.json.

    with UpTimeline(run, "up") as timed:    # the pod watch, the engine's event log; the timeline on leaving
        run.pulumi("up", "--yes", "--skip-preview", *timed.args)

`python -m tests.e2e --only speed` runs `speed`: those three on a 1-node stack, then destroys it.
"""

from __future__ import annotations

import json
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Any

from components.trainer_image import PREPULL_LABELS
from tests.e2e import timeline
from tests.e2e.harness import E2EFailure
from tests.e2e.real_run import JOBSET_LABEL, NAMESPACE, Run

# The pre-pull DaemonSet's pods carry this label (components/trainer_image.py PREPULL_LABELS).
PREPULL_LABEL = "app.kubernetes.io/component"
PREPULL_VALUE = PREPULL_LABELS[PREPULL_LABEL]
PREPULL_INSTANCE = "app.kubernetes.io/instance"
# How long leaving an UpTimeline waits for the job's first step.
FIRST_STEP_WAIT_S = 600


class PodWatch:
    """Every pod event of the namespace (`kubectl get pods --watch --output-watch-events -o json`), stamped
    with the time it arrived; the watch is restarted when the API server ends it."""

    def __init__(self, run: Run, namespace: str = NAMESPACE) -> None:
        self.run = run
        self.namespace = namespace
        self.events: list[tuple[float, dict[str, Any]]] = []
        self._stopped = threading.Event()
        self._process: subprocess.Popen[str] | None = None
        self._thread = threading.Thread(target=self._watch, daemon=True)

    def __enter__(self) -> PodWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        self.stop()

    def stop(self) -> None:
        self._stopped.set()
        if self._process is not None and self._process.poll() is None:
            self._process.terminate()
        self._thread.join(timeout=10)

    def _watch(self) -> None:
        command = ["kubectl", "--kubeconfig", self.run.cluster["KUBECONFIG"], "get", "pods", "-n",
                   self.namespace, "--watch", "--output-watch-events", "-o", "json"]  # fmt: skip
        while not self._stopped.is_set():
            self._process = subprocess.Popen(
                command, env=self.run.sh.env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
            )
            assert self._process.stdout is not None
            lines = timeline.WatchLines()
            for line in self._process.stdout:
                objects = lines.feed(line)
                if objects:
                    now = time.time()
                    self.events += [(now, obj) for obj in objects]
            self._process.wait()
            self._stopped.wait(1)

    def pods(self) -> dict[str, timeline.WatchedPod]:
        return timeline.fold_watch(list(self.events))


def labelled(pod: dict[str, Any], key: str, value: str) -> bool:
    return bool(pod.get("metadata", {}).get("labels", {}).get(key) == value)


def created_after(pod: dict[str, Any], origin: float) -> bool:
    created = timeline.k8s_time(pod.get("metadata", {}).get("creationTimestamp"))
    return created is not None and created >= int(origin)  # whole seconds


def save(run: Run, name: str, build: Callable[[], tuple[timeline.Timeline, dict[str, Any]]]) -> None:
    """Prints the critical path; keeps the timeline in the report and what it was made of in the run dir
    (timeline-<name>.json). A timeline that cannot be made is an error under its name, never a failed run:
    the phases' own checks judge the run."""
    try:
        result, sources = build()
        (run.run_dir / f"timeline-{name}.json").write_text(json.dumps(sources, indent=1) + "\n")
        data = result.report(timeline.FIRST_STEP) if timeline.FIRST_STEP in result.spans else None
    except Exception as error:
        data, problem = None, f"not made: {error!r}"
    else:
        problem = "no first step recorded"
    run.report.data.setdefault("timeline", {})[name] = data or {"error": problem}
    run.report.save()
    print(timeline.render(f"e2e: timeline {name}", data) if data else f"e2e: timeline {name}: {problem}")


def record_up(run: Run, name: str, origin: float, event_log: Path, watch: PodWatch) -> None:
    """`up` started at origin (wall clock) -> the first step of the job it started, once that step is logged."""

    def build() -> tuple[timeline.Timeline, dict[str, Any]]:
        starts = [s for s in run.starts() if s.get("at", {}).get("first_step", 0) >= origin]
        pods = [p.obj for p in watch.pods().values() if created_after(p.obj, origin)]
        sources = {
            "origin": origin,
            "engine_events": timeline.read_event_log(event_log.read_text()) if event_log.exists() else [],
            "deployment": json.loads(run.pulumi("stack", "export").stdout).get("deployment", {}),
            "job_pods": [p for p in pods if labelled(p, JOBSET_LABEL, run.job)],
            "prepull_pods": [
                p
                for p in pods
                if labelled(p, PREPULL_LABEL, PREPULL_VALUE) and labelled(p, PREPULL_INSTANCE, run.job)
            ],
            "k8s_events": run.kube_json("get", "events", "-n", NAMESPACE)["items"],
            "start": starts[0] if starts else None,
        }
        return timeline.up_timeline(**sources), sources

    save(run, name, build)


class UpTimeline:
    """Around a `pulumi up`: the pod watch and the engine's event log (pass `args` to the up); on leaving,
    once the job that up started has logged its first step (up to FIRST_STEP_WAIT_S), its timeline.

        with UpTimeline(run, "up") as timed:
            run.pulumi("up", "--yes", "--skip-preview", *timed.args)
    """

    def __init__(self, run: Run, name: str) -> None:
        self.run, self.name = run, name
        self.log = run.run_dir / f"events-{name}.jsonl"
        self.args = ("--event-log", str(self.log))
        self.watch = PodWatch(run)
        self.origin = 0.0

    def __enter__(self) -> UpTimeline:
        self.watch.__enter__()
        self.origin = time.time()
        return self

    def __exit__(self, kind: type[BaseException] | None, *exc: BaseException | TracebackType | None) -> None:
        deadline = time.monotonic() + (FIRST_STEP_WAIT_S if kind is None else 0)
        while time.monotonic() < deadline and not self.first_steps():
            time.sleep(2)
        time.sleep(2)  # the watch's last events
        self.watch.stop()
        record_up(self.run, self.name, self.origin, self.log, self.watch)

    def first_steps(self) -> list[dict[str, Any]]:
        """The job's start records with a first step since the origin (none while its claim is not there)."""
        try:
            starts = self.run.starts()
        except E2EFailure:
            return []
        return [s for s in starts if s.get("at", {}).get("first_step", 0) >= self.origin]


def record_recovery(
    run: Run, name: str, evicted: float, returned: float, watch: PodWatch, preempted: dict[str, Any] | None
) -> None:
    """An eviction requested at `evicted` (the API answered at `returned`) -> the first step after the resume."""

    def build() -> tuple[timeline.Timeline, dict[str, Any]]:
        seen = [p for p in watch.pods().values() if labelled(p.obj, JOBSET_LABEL, run.job)]
        starts = [s for s in run.starts() if s.get("at", {}).get("first_step", 0) >= evicted]
        sources = {
            "evicted": evicted,
            "eviction_returned": returned,
            "preempted": preempted,
            "old_pods": [
                {"obj": p.obj, "deleted_at": p.deleted_at}
                for p in seen
                if p.deleted_at and not created_after(p.obj, evicted)
            ],
            "new_pods": [p.obj for p in seen if created_after(p.obj, evicted)],
            "k8s_events": run.kube_json("get", "events", "-n", NAMESPACE)["items"],
            "start": starts[0] if starts else None,
        }
        return timeline.recovery_timeline(**sources), sources

    save(run, name, build)
