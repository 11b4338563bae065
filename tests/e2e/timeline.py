"""Timelines of the real run: when each thing a user waits for started and ended, and the critical path.

A timeline is a set of spans (start, end, and the spans each waited for). The critical path to a span is found
backwards: from it to the predecessor that ended last, and so on; its links with the idle `gap` before each
say where the time went. All sources share this machine's clock (the test cluster's nodes are containers here):
  - the Pulumi engine's events (`pulumi up --event-log FILE`, one JSON object a line): a resource's step runs
    from its resourcePreEvent to its resOutputsEvent (or resOpFailedEvent); `timestamp` is whole seconds,
    `sequence` orders events of the same second (upstream: pulumi/pulumi sdk/go/common/apitype/events.go
    @ v3.259.0, EngineEvent);
  - what each resource waited for, from the state (`pulumi stack export`): its provider and `dependencies`,
    `data` when a property of it came from the other (`propertyDependencies`), else `order` (depends_on only,
    the edges an ordering choice put there: `needless_waits` names those on the path but NEEDED_ORDERS);
  - the job's pods (created, PodScheduled, the kubelet's Pulling/Pulled events, the container's start and
    exit, and when a watch saw the pod deleted);
  - the trainer's own instants (trainer/startup.py's `at`: launcher, worker process, imports done, process group
    joined, checkpoint loaded, first step; the `preempted` record's SIGTERM and checkpoint published).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

# Steps that are markers of another step (a replacement's logical `replace`) or do nothing to wait for.
SKIPPED_OPS = {"replace", "discard", "discard-replaced", "remove-pending-replace"}
DELETE_OPS = {"delete", "delete-replaced"}
# Gaps shorter than this are bookkeeping (whole-second timestamps, polling), not a wait worth naming.
NOTABLE_GAP_S = 2.0
# The trainer's instants in order (trainer/startup.py StartupClock.timestamps) and what ends at each.
TRAINER_STAGES = (
    ("launch", "launcher started"),
    ("process", "worker process started (after torchrun, where it runs)"),
    ("imported", "imports"),
    ("rendezvous", "DeepSpeed imported, process group joined"),
    ("engine", "data, model, engine"),
    ("resume", "checkpoint loaded"),
    ("prepare", "metric sinks, checkpoint writer"),
    ("first_step", "first step"),
)


@dataclass
class Span:
    """Something that took time: it could start once every span in `after` had ended (edge kind by name)."""

    name: str
    start: float
    end: float
    after: dict[str, str] = field(default_factory=dict)
    # Ties of whole-second timestamps are broken by this (the engine's event sequence, or insertion order).
    order: int = 0

    @property
    def seconds(self) -> float:
        return self.end - self.start


@dataclass(frozen=True)
class Link:
    """One span on a critical path: its start and end (seconds from the origin), the wait before it."""

    name: str
    start_s: float
    end_s: float
    # Idle seconds between the end of what it waited for and its own start.
    gap_s: float
    # How it waited for the previous link (data, order, provider, pod, ...); "" for the first.
    edge: str

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "start_s": round(self.start_s, 1),
            "end_s": round(self.end_s, 1),
            "seconds": round(self.end_s - self.start_s, 1),
            "gap_s": round(self.gap_s, 1),
            "edge": self.edge,
        }


class Timeline:
    """Spans by name; add() keeps names unique and remembers insertion order for ties."""

    def __init__(self, origin: float) -> None:
        self.origin = origin
        self.spans: dict[str, Span] = {}

    def add(self, name: str, start: float, end: float, after: Mapping[str, str] | None = None) -> Span:
        span = Span(name, start, max(start, end), dict(after or {}), order=len(self.spans))
        self.spans[name] = span
        return span

    def critical_path(self, target: str) -> list[Link]:
        """From the origin to `target`: each span preceded by the one it waited for that ended last."""
        chain: list[tuple[Span, Span | None]] = []
        seen: set[str] = set()
        name: str | None = target
        while name is not None and name not in seen:
            seen.add(name)
            span = self.spans[name]
            waited = [self.spans[n] for n in span.after if n in self.spans and n not in seen]
            previous = max(waited, key=lambda s: (s.end, s.order)) if waited else None
            chain.append((span, previous))
            name = previous.name if previous else None
        links = []
        for span, previous in reversed(chain):
            ready = previous.end if previous else self.origin
            links.append(
                Link(
                    span.name,
                    span.start - self.origin,
                    span.end - self.origin,
                    max(0.0, span.start - ready),
                    span.after.get(previous.name, "") if previous else "",
                )
            )
        return links

    def report(self, target: str) -> dict[str, Any]:
        """What runs/e2e/report.json keeps: the total, the critical path, the waits it need not have, and
        every span (seconds from the origin, in order of start)."""
        path = self.critical_path(target)
        spans = sorted(self.spans.values(), key=lambda s: (s.start, s.order))
        return {
            "total_s": round(self.spans[target].end - self.origin, 1),
            "critical_path": [link.as_dict() for link in path],
            "needless_waits": needless_waits(path),
            "spans": [
                {
                    "name": s.name,
                    "start_s": round(s.start - self.origin, 1),
                    "seconds": round(s.seconds, 1),
                }
                for s in spans
            ],
        }


# `depends_on` orders of the stack that no Pulumi value carries but that are needed: (the waiting resource,
# the prefix of what it waits for) -> why. An `order` link of these is on the path for a reason.
NEEDED_ORDERS = {
    ("pulumi cluster-kind", "pulumi cluster-kind-shared"): "kind mounts the shared directory into its nodes",
    ("pulumi trainer-image-kind-load", "pulumi cluster-"): "it loads the image into the cluster's nodes",
    ("pulumi training-trainjob", "pulumi training-runtime"): "the TrainJob runs on its runtime",
}


def needed_order(waiting: str, waited_for: str) -> bool:
    return any(waiting == name and waited_for.startswith(prefix) for (name, prefix) in NEEDED_ORDERS)


def needless_waits(path: Sequence[Link]) -> list[str]:
    """The links of a critical path that wait without needing to: an `order` edge (depends_on with no value
    flowing) that is not one of NEEDED_ORDERS, or an idle gap of NOTABLE_GAP_S or more that no span accounts
    for (but the CLI's and the program's start before a resource's registration, a `program` edge's gap)."""
    found = []
    for previous, link in zip([None, *path], path, strict=False):
        waited_for = previous.name if previous else ""
        if link.edge == "order" and not needed_order(link.name, waited_for):
            found.append(f"{link.name}: ordered after the previous link by depends_on, no value flows")
        if link.gap_s >= NOTABLE_GAP_S and link.edge != "program":
            found.append(f"{link.name}: started {link.gap_s:.1f} s after what it waited for")
    return found


def render(title: str, report: Mapping[str, Any]) -> str:
    """The critical path as printed lines: start, duration, idle gap before, name and edge."""
    lines = [f"{title}: {report['total_s']} s; critical path (start s, seconds, idle before):"]
    for link in report["critical_path"]:
        edge = f" [{link['edge']}]" if link["edge"] else ""
        lines.append(
            f"  {link['start_s']:7.1f} {link['seconds']:7.1f} {link['gap_s']:6.1f}  {link['name']}{edge}"
        )
    lines += [f"  needless: {reason}" for reason in report["needless_waits"]]
    return "\n".join(lines)


# --- the Pulumi engine -------------------------------------------------------------------------------------


def read_event_log(text: str) -> list[dict[str, Any]]:
    """The engine's events, one JSON object a line (a torn last line, from a cut-off run, is left out)."""
    events = []
    for line in text.splitlines():
        try:
            events.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return events


def resource_name(urn: str) -> str:
    """The resource's own name, the URN's last part (urn:pulumi:stack::project::type::name)."""
    return urn.rsplit("::", 1)[-1]


def state_edges(deployment: Mapping[str, Any]) -> dict[str, dict[str, str]]:
    """For every resource's URN in `pulumi stack export`'s deployment: what it waited for, URN -> edge kind."""
    edges: dict[str, dict[str, str]] = {}
    for resource in deployment.get("resources") or []:
        flowing = {u for urns in (resource.get("propertyDependencies") or {}).values() for u in urns}
        waits = {u: ("data" if u in flowing else "order") for u in resource.get("dependencies") or []}
        provider = resource.get("provider")
        if provider:
            waits[provider.rsplit("::", 1)[0]] = "provider"  # "<provider URN>::<provider id>"
        edges[resource["urn"]] = waits
    return edges


def add_engine_events(
    timeline: Timeline, events: Iterable[Mapping[str, Any]], edges: Mapping[str, Mapping[str, str]], root: str
) -> dict[str, str]:
    """The steps of custom resources and providers (components only group them) as spans named
    `pulumi <name>` (a delete: `pulumi <name> (<op>)`), each after what the state says it waited for, else
    after `root`; a replacement created after its old resource's delete (delete before replace) waits for that.
    Returns the span name of each URN's create, update or same step."""
    stamps: dict[str, dict[tuple[str, str], tuple[float, int]]] = {"start": {}, "end": {}}
    custom: set[str] = set()
    for event in events:
        for kind, which in (
            ("resourcePreEvent", "start"),
            ("resOutputsEvent", "end"),
            ("resOpFailedEvent", "end"),
        ):
            body = event.get(kind)
            if not body or body.get("planning") or body["metadata"]["op"] in SKIPPED_OPS:
                continue
            metadata = body["metadata"]
            state = metadata.get("new") or metadata.get("old") or {}
            if state.get("custom") or metadata["type"].startswith("pulumi:providers:"):
                custom.add(metadata["urn"])
            stamp = (float(event["timestamp"]), int(event.get("sequence", 0)))
            stamps[which].setdefault((metadata["urn"], metadata["op"]), stamp)

    def span_name(urn: str, op: str) -> str:
        return f"pulumi {resource_name(urn)}" + (f" ({op})" if op in DELETE_OPS else "")

    steps = sorted((stamp, key) for key, stamp in stamps["start"].items() if key[0] in custom)
    names = {urn: span_name(urn, op) for _, (urn, op) in steps if op not in DELETE_OPS}
    for (start, sequence), (urn, op) in steps:
        end, end_sequence = stamps["end"].get((urn, op), (start, sequence))
        if op in DELETE_OPS:
            after = {root: "program"}
        else:
            after = {names[u]: kind for u, kind in edges.get(urn, {}).items() if u in names and u != urn}
            old = stamps["end"].get((urn, "delete-replaced"))
            if old is not None and old[0] <= start:
                after[span_name(urn, "delete-replaced")] = "replace"
            after = after or {root: "program"}
        timeline.add(span_name(urn, op), start, end, after).order = end_sequence
    return names


# --- Kubernetes ----------------------------------------------------------------------------------------------


def k8s_time(value: str | None) -> float | None:
    """An RFC 3339 time of the API (2026-12-05T03:10:22Z, or with fractions) in seconds since the epoch."""
    if not value:
        return None
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


def event_time(event: Mapping[str, Any], which: str = "first") -> float | None:
    """When a core/v1 Event happened: its first (or last) timestamp, else eventTime (micro-time)."""
    stamp = event.get("firstTimestamp" if which == "first" else "lastTimestamp") or event.get("eventTime")
    return k8s_time(stamp)


def pod_events(events: Iterable[Mapping[str, Any]], pod: str) -> list[Mapping[str, Any]]:
    return [
        e
        for e in events
        if e.get("involvedObject", {}).get("kind") == "Pod" and e["involvedObject"].get("name") == pod
    ]


def image_span(events: Sequence[Mapping[str, Any]]) -> tuple[float, float, str] | None:
    """The pod's image pull from its kubelet events: Pulling -> Pulled (first, last time), and what Pulled
    said ("already present" when nothing was pulled); None when the kubelet reported neither."""
    pulling = [t for e in events if e.get("reason") == "Pulling" and (t := event_time(e)) is not None]
    pulled = [
        (t, e.get("message", ""))
        for e in events
        if e.get("reason") == "Pulled" and (t := event_time(e, "last")) is not None
    ]
    if not pulled:
        return None
    end, message = max(pulled)
    start = min(pulling) if pulling else end
    return start, end, message


def container_times(pod: Mapping[str, Any], container: str) -> tuple[float | None, float | None]:
    """The container's start and (when it ended) finish, from the pod's status."""
    for status in pod.get("status", {}).get("containerStatuses") or []:
        if status.get("name") != container:
            continue
        state = status.get("state") or {}
        for key in ("running", "terminated"):
            if key in state:
                return k8s_time(state[key].get("startedAt")), k8s_time(state[key].get("finishedAt"))
    return None, None


def condition_time(pod: Mapping[str, Any], kind: str) -> float | None:
    for condition in pod.get("status", {}).get("conditions") or []:
        if condition.get("type") == kind and condition.get("status") == "True":
            return k8s_time(condition.get("lastTransitionTime"))
    return None


def add_pod(
    timeline: Timeline,
    label: str,
    pod: Mapping[str, Any],
    events: Iterable[Mapping[str, Any]],
    *,
    container: str,
    after: Mapping[str, str],
    image_after: Mapping[str, str] | None = None,
) -> str | None:
    """The pod's spans `<label> created`, `scheduled`, `image`, `started` (each after the one before; created
    after `after`; an image already present after `image_after`, the pull that put it there). Returns the name
    of the last span, or None when the pod never got as far as being created."""
    created = k8s_time(pod.get("metadata", {}).get("creationTimestamp"))
    if created is None:
        return None
    last = timeline.add(f"{label} created", created, created, after).name
    scheduled = condition_time(pod, "PodScheduled")
    if scheduled is None:
        return last
    last = timeline.add(f"{label} scheduled", created, scheduled, {last: "pod"}).name
    pulled = image_span(pod_events(events, pod["metadata"]["name"]))
    if pulled is not None:
        start, end, message = pulled
        present = "already present" in message
        waits = {last: "pod", **({} if not present else dict(image_after or {}))}
        what = "image already present" if present else "image pulled"
        last = timeline.add(f"{label} {what}", max(start, scheduled) if not present else end, end, waits).name
    started, _ = container_times(pod, container)
    if started is None:
        return last
    return timeline.add(f"{label} container started", timeline.spans[last].end, started, {last: "pod"}).name


def add_trainer(
    timeline: Timeline, label: str, at: Mapping[str, float], after: Mapping[str, str]
) -> str | None:
    """The trainer's stages from a `start` record's `at` (trainer/startup.py), each after the one before, the
    first after `after` (the containers it needed started). Returns the first step's span name."""
    last: str | None = None
    previous_end: float | None = None
    for instant, title in TRAINER_STAGES:
        if instant not in at:
            continue
        end = float(at[instant])
        start = end if previous_end is None else previous_end
        waits = dict(after) if last is None else {last: "trainer"}
        last = timeline.add(f"{label} {title}", start, end, waits).name
        previous_end = end
    return last


# --- kubectl's watch -------------------------------------------------------------------------------------------


@dataclass
class WatchedPod:
    """What a watch saw of one pod: its newest object and when it was first and last seen, and deleted."""

    obj: dict[str, Any]
    first_seen: float
    deleted_at: float | None = None


def watch_objects(text: str) -> Iterator[dict[str, Any]]:
    """The JSON objects of `kubectl get --watch --output-watch-events -o json` (concatenated, pretty-printed)."""
    decoder = json.JSONDecoder()
    index = 0
    while True:
        match = re.compile(r"\S").search(text, index)
        if match is None:
            return
        try:
            obj, index = decoder.raw_decode(text, match.start())
        except json.JSONDecodeError:
            return  # a torn last object
        yield obj


class WatchLines:
    """The objects of a `kubectl get --watch --output-watch-events -o json` stream, fed line by line as they
    arrive. kubectl prints each object whole on one line (kubectl v1.33.13, the test cluster's; the first real
    `--only speed` run caught nothing while this waited for a closing brace alone on its line) or pretty-printed,
    its closing brace then alone on the last line: either ends an object."""

    def __init__(self) -> None:
        self.pending = ""

    def feed(self, line: str) -> list[dict[str, Any]]:
        """The objects that `line` completes (none while one is still open)."""
        self.pending += line
        end = line.rstrip()
        if end != "}" and not (line.startswith("{") and end.endswith("}")):
            return []
        objects = list(watch_objects(self.pending))
        if objects:
            self.pending = ""
        return objects


def fold_watch(stamped: Iterable[tuple[float, Mapping[str, Any]]]) -> dict[str, WatchedPod]:
    """Watch events ({"type": ADDED|MODIFIED|DELETED, "object": pod}) with the time each arrived, folded by
    pod uid."""
    pods: dict[str, WatchedPod] = {}
    for at, event in stamped:
        obj = dict(event.get("object") or {})
        uid = obj.get("metadata", {}).get("uid")
        if not uid:
            continue
        seen = pods.setdefault(uid, WatchedPod(obj, at))
        seen.obj = obj
        if event.get("type") == "DELETED":
            seen.deleted_at = at
    return pods


# --- the two timelines of the report ------------------------------------------------------------------------

ROOT = "pulumi up started"
# The span both timelines end with (add_trainer's last).
FIRST_STEP = f"trainer {TRAINER_STAGES[-1][1]}"
NODE_CONTAINER = "node"


def pod_label(pod: Mapping[str, Any], prefix: str) -> str:
    """A pod's short name in a timeline: the prefix and the name's last two dash-separated parts."""
    return f"{prefix} {'-'.join(pod['metadata']['name'].split('-')[-2:])}"


def up_timeline(
    origin: float,
    engine_events: Sequence[Mapping[str, Any]],
    deployment: Mapping[str, Any],
    job_pods: Sequence[Mapping[str, Any]],
    prepull_pods: Sequence[Mapping[str, Any]],
    k8s_events: Sequence[Mapping[str, Any]],
    start: Mapping[str, Any] | None,
) -> Timeline:
    """`pulumi up` (started at origin) to the trainer's first step: the engine's resource steps, the pre-pull
    pods (after the resource that made them), the job's pods (after the TrainJob resource) and the trainer
    (after every pod's container started). Its target: FIRST_STEP."""
    timeline = Timeline(origin)
    timeline.add(ROOT, origin, origin)
    names = add_engine_events(timeline, engine_events, state_edges(deployment), ROOT)
    made_by = {
        kind: next((names[u] for u in names if f":{kind}::" in u), ROOT) for kind in ("TrainJob", "DaemonSet")
    }
    prepulled: dict[str, str] = {}
    for pod in prepull_pods:
        label = pod_label(pod, "pre-pull")
        last = add_pod(timeline, label, pod, k8s_events, container="pull",
                       after={made_by["DaemonSet"]: "controller"})  # fmt: skip
        pulled = f"{label} image pulled"  # what a pod on the same node finding the image there waited for
        if last is not None and pod.get("spec", {}).get("nodeName"):
            prepulled[pod["spec"]["nodeName"]] = pulled if pulled in timeline.spans else last
    add_job(timeline, "pod", job_pods, k8s_events, {made_by["TrainJob"]: "controllers"}, start, prepulled)
    return timeline


def add_job(
    timeline: Timeline,
    prefix: str,
    pods: Sequence[Mapping[str, Any]],
    k8s_events: Sequence[Mapping[str, Any]],
    after: Mapping[str, str],
    start: Mapping[str, Any] | None,
    prepulled: Mapping[str, str] | None = None,
) -> str | None:
    """One incarnation of the job: its pods, then the trainer's stages after all of them. Returns the first
    step's span name (None when the trainer recorded no start)."""
    started = {}
    for pod in pods:
        node = pod.get("spec", {}).get("nodeName")
        image_after = {prepulled[node]: "pre-pull"} if prepulled and node in prepulled else None
        last = add_pod(timeline, pod_label(pod, prefix), pod, k8s_events, container=NODE_CONTAINER,
                       after=after, image_after=image_after)  # fmt: skip
        if last is not None:
            started[last] = "pod"
    if start is None or not start.get("at"):
        return None
    return add_trainer(timeline, "trainer", start["at"], started or dict(after))


def recovery_timeline(
    evicted: float,
    eviction_returned: float,
    preempted: Mapping[str, Any] | None,
    old_pods: Sequence[Mapping[str, Any]],
    new_pods: Sequence[Mapping[str, Any]],
    k8s_events: Sequence[Mapping[str, Any]],
    start: Mapping[str, Any] | None,
) -> Timeline:
    """An eviction (requested at `evicted`) to the first step after the resume: SIGTERM reaching the
    trainer, its stop checkpoint, every old pod's exit and deletion (old_pods: {"obj": its last state,
    "deleted_at": when the watch saw it deleted}), then the new incarnation (created once every old pod was
    gone: the JobSet restart) up to its first step."""
    timeline = Timeline(evicted)
    last = timeline.add("eviction requested", evicted, eviction_returned).name
    if preempted and preempted.get("signal_at") and preempted.get("at"):
        last = timeline.add(
            "SIGTERM reached the trainer", evicted, preempted["signal_at"], {last: "kubelet"}
        ).name
        last = timeline.add("stop checkpoint published", preempted["signal_at"], preempted["at"],
                            {last: "trainer"}).name  # fmt: skip
    gone = {}
    for seen in old_pods:
        label = pod_label(seen["obj"], "old pod")
        _, finished = container_times(seen["obj"], NODE_CONTAINER)
        exited = timeline.add(f"{label} exited", timeline.spans[last].end, finished or timeline.spans[last].end,
                              {last: "pod"}).name  # fmt: skip
        if seen.get("deleted_at") is not None:
            deleted = timeline.add(f"{label} deleted", timeline.spans[exited].end, seen["deleted_at"],
                                   {exited: "pod"}).name  # fmt: skip
            gone[deleted] = "jobset restart"
    add_job(timeline, "new pod", new_pods, k8s_events, gone or {last: "jobset restart"}, start)
    return timeline
