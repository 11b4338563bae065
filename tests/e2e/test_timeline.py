"""tests/e2e/timeline.py offline: the engine's events, the pods' and the trainer's instants made into spans, and
the critical path through them, on events in the shapes the real sources write (Pulumi's EngineEvent JSON lines,
`pulumi stack export`, core/v1 Pods and Events, kubectl's watch stream, the trainer's `at`)."""

from __future__ import annotations

import json
from datetime import UTC
from typing import Any

import pytest

from tests.e2e import timeline
from tests.e2e.timeline import FIRST_STEP, ROOT, Timeline

T0 = 1_764_900_000  # 2025-12-05T02:00:00Z
STACK = "urn:pulumi:e2e::trainstack::"
PROVIDER = f"{STACK}pulumi:providers:kubernetes::cluster-provider"
IMAGE = f"{STACK}trainstack:index:TrainerImage$docker:index/image:Image::trainer-image"
RELEASE = f"{STACK}trainstack:index:KubeflowTrainer$kubernetes:helm.sh/v3:Release::kubeflow-trainer"
NAMESPACE = f"{STACK}trainstack:index:Access$kubernetes:core/v1:Namespace::access-namespace"
TRAINJOB = f"{STACK}trainstack:index:TrainingJob$kubernetes:trainer.kubeflow.org/v1alpha1:TrainJob::training"
COMPONENT = f"{STACK}trainstack:index:TrainerImage::trainer-image"


def iso(seconds: float) -> str:
    """An API time, whole seconds, UTC."""
    from datetime import datetime

    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def step(
    kind: str, sequence: int, at: float, urn: str, op: str = "create", custom: bool = True
) -> dict[str, Any]:
    """One engine event as `pulumi up --event-log` writes it (the fields this reads, and a few others)."""
    kind_type = urn.split("::")[-2].split("$")[-1]
    state = {"type": kind_type, "urn": urn, "custom": custom, "id": "", "parent": "", "provider": ""}
    return {
        "sequence": sequence,
        "timestamp": int(at),
        kind: {
            "metadata": {"op": op, "urn": urn, "type": kind_type, "old": None, "new": state, "provider": ""}
        },
    }


def engine_events() -> list[dict[str, Any]]:
    """The provider at once; the component; the image (build and push, 100 s) and the Trainer release
    (60 s, after the provider) side by side; the namespace; the TrainJob after the release and the image."""
    events = [{"sequence": 1, "timestamp": T0 + 2, "preludeEvent": {"config": {}}}]
    sequence = 1
    for kind, at, urn, custom in [
        ("resourcePreEvent", 3, PROVIDER, True),
        ("resourcePreEvent", 3, COMPONENT, False),
        ("resOutputsEvent", 3, PROVIDER, True),
        ("resourcePreEvent", 3, IMAGE, True),
        ("resourcePreEvent", 4, RELEASE, True),
        ("resourcePreEvent", 4, NAMESPACE, True),
        ("resOutputsEvent", 4, NAMESPACE, True),
        ("resOutputsEvent", 64, RELEASE, True),
        ("resOutputsEvent", 103, IMAGE, True),
        ("resOutputsEvent", 103, COMPONENT, False),
        ("resourcePreEvent", 104, TRAINJOB, True),
        ("resOutputsEvent", 105, TRAINJOB, True),
    ]:
        sequence += 1
        events.append(step(kind, sequence, T0 + at, urn, custom=custom))
    events.append({"sequence": sequence + 1, "timestamp": T0 + 110, "summaryEvent": {"durationSeconds": 108}})
    return events


def deployment() -> dict[str, Any]:
    """`pulumi stack export`'s deployment: the TrainJob takes the image's reference (data) and is ordered
    after the release (depends_on)."""
    provider = f"{PROVIDER}::0a1b"
    return {
        "resources": [
            {"urn": PROVIDER, "custom": True, "dependencies": []},
            {"urn": IMAGE, "custom": True, "dependencies": []},
            {"urn": RELEASE, "custom": True, "dependencies": [], "provider": provider},
            {"urn": NAMESPACE, "custom": True, "provider": provider},
            {
                "urn": TRAINJOB,
                "custom": True,
                "provider": provider,
                "dependencies": [IMAGE, RELEASE, NAMESPACE],
                "propertyDependencies": {"spec": [IMAGE], "metadata": [NAMESPACE]},
            },
        ]
    }


def pod(name: str, node: str, created: float, scheduled: float, started: float, finished: float | None = None,
        uid: str = "") -> dict[str, Any]:  # fmt: skip
    state = {"startedAt": iso(started)}
    if finished is not None:
        state["finishedAt"] = iso(finished)
    return {
        "metadata": {"name": name, "uid": uid or name, "creationTimestamp": iso(created)},
        "spec": {"nodeName": node},
        "status": {
            "conditions": [{"type": "PodScheduled", "status": "True", "lastTransitionTime": iso(scheduled)}],
            "containerStatuses": [
                {"name": "node", "state": {"terminated" if finished else "running": state}},
            ],
        },
    }


def kubelet(pod_name: str, reason: str, at: float, message: str = "") -> dict[str, Any]:
    return {
        "involvedObject": {"kind": "Pod", "name": pod_name},
        "reason": reason,
        "message": message,
        "firstTimestamp": iso(at),
        "lastTimestamp": iso(at),
        "eventTime": None,
    }


def start_record(first: float, resumed: bool = False) -> dict[str, Any]:
    """The trainer's `start` record's `at` (trainer/startup.py), seconds from T0 + first."""
    marks = [("launch", 0.0), ("process", 1.5), ("imported", 9.0), ("rendezvous", 9.4), ("startup", 9.5),
             ("data", 9.7), ("engine", 12.0), ("resume", 12.6 if resumed else 12.0), ("prepare", 12.8),
             ("first_step", 13.0)]  # fmt: skip
    return {"event": "start", "at": {name: T0 + first + seconds for name, seconds in marks}}


def test_the_critical_path_follows_what_each_span_waited_for_that_ended_last() -> None:
    line = Timeline(origin=100.0)
    line.add("root", 100, 100)
    line.add("a", 101, 110, {"root": "program"})
    line.add("b", 100, 130, {"root": "program"})
    line.add("c", 135, 140, {"a": "data", "b": "order"})
    path = line.critical_path("c")
    assert [(link.name, link.edge, link.gap_s) for link in path] == [
        ("root", "", 0.0),
        ("b", "program", 0.0),
        ("c", "order", 5.0),
    ]
    report = line.report("c")
    assert report["total_s"] == 40.0
    assert report["needless_waits"] == [
        "c: ordered after the previous link by depends_on, no value flows",
        "c: started 5.0 s after what it waited for",
    ]
    assert [span["name"] for span in report["spans"]] == ["root", "b", "a", "c"]


def test_an_order_the_stack_needs_is_not_named_needless() -> None:
    """kind's image load waits for the cluster by depends_on alone, and must: its nodes receive the image."""
    line = Timeline(origin=100.0)
    line.add("pulumi cluster-kind", 100, 140)
    line.add("pulumi trainer-image-kind-load", 140, 300, {"pulumi cluster-kind": "order"})
    line.add("pulumi training-runtime", 300, 301, {"pulumi trainer-image-kind-load": "order"})
    line.add("pulumi training-trainjob", 301, 302, {"pulumi training-runtime": "order"})
    report = line.report("pulumi training-trainjob")
    assert report["needless_waits"] == [
        "pulumi training-runtime: ordered after the previous link by depends_on, no value flows"
    ]


def test_ties_of_whole_second_timestamps_go_to_the_later_event() -> None:
    line = Timeline(origin=0.0)
    line.add("x", 0, 10).order = 7
    line.add("y", 0, 10).order = 3
    line.add("z", 10, 12, {"x": "data", "y": "data"})
    assert [link.name for link in line.critical_path("z")] == ["x", "z"]


def test_state_edges_tell_data_from_ordering_and_name_the_provider() -> None:
    edges = timeline.state_edges(deployment())
    assert edges[TRAINJOB] == {IMAGE: "data", RELEASE: "order", NAMESPACE: "data", PROVIDER: "provider"}
    assert edges[IMAGE] == {}


def test_engine_events_become_spans_of_custom_resources_after_what_they_waited_for() -> None:
    line = Timeline(T0)
    line.add(ROOT, T0, T0)
    names = timeline.add_engine_events(line, engine_events(), timeline.state_edges(deployment()), ROOT)
    assert names[TRAINJOB] == "pulumi training" and COMPONENT not in names
    image = line.spans["pulumi trainer-image"]
    assert (image.start - T0, image.seconds, image.after) == (3, 100, {ROOT: "program"})
    assert line.spans["pulumi training"].after == {
        "pulumi trainer-image": "data",
        "pulumi kubeflow-trainer": "order",
        "pulumi access-namespace": "data",
        "pulumi cluster-provider": "provider",
    }
    assert [link.name for link in line.critical_path("pulumi training")] == [
        ROOT,
        "pulumi trainer-image",
        "pulumi training",
    ]


def test_a_replacement_deleted_first_waits_for_its_delete() -> None:
    events = [
        step("resourcePreEvent", 1, T0 + 1, TRAINJOB, op="delete-replaced"),
        step("resOutputsEvent", 2, T0 + 9, TRAINJOB, op="delete-replaced"),
        step("resourcePreEvent", 3, T0 + 9, TRAINJOB, op="replace"),
        step("resourcePreEvent", 4, T0 + 10, TRAINJOB, op="create-replacement"),
        step("resOutputsEvent", 5, T0 + 11, TRAINJOB, op="create-replacement"),
    ]
    line = Timeline(T0)
    line.add(ROOT, T0, T0)
    timeline.add_engine_events(line, events, {}, ROOT)
    assert set(line.spans) == {ROOT, "pulumi training (delete-replaced)", "pulumi training"}
    assert [link.name for link in line.critical_path("pulumi training")] == [
        ROOT,
        "pulumi training (delete-replaced)",
        "pulumi training",
    ]


def test_up_timeline_from_the_engine_through_the_pod_to_the_first_step() -> None:
    name = "gpt-e2e-node-0-0-x7k2p"
    job_pod = pod(name, "node2", created=T0 + 106, scheduled=T0 + 106, started=T0 + 170)
    events = [
        kubelet(name, "Pulling", T0 + 107, 'Pulling image "127.0.0.1:5000/trainstack/trainer@sha256:07d5"'),
        kubelet(
            name, "Pulled", T0 + 168, "Successfully pulled image ... in 1m0.9s (1m0.9s including waiting)"
        ),
        kubelet(name, "Started", T0 + 170),
    ]
    line = timeline.up_timeline(
        origin=T0,
        engine_events=engine_events(),
        deployment=deployment(),
        job_pods=[job_pod],
        prepull_pods=[],
        k8s_events=events,
        start=start_record(first=171),
    )
    report = line.report(FIRST_STEP)
    assert report["total_s"] == 184.0
    assert [(link["name"], link["seconds"], link["edge"]) for link in report["critical_path"]] == [
        (ROOT, 0.0, ""),
        ("pulumi trainer-image", 100.0, "program"),
        ("pulumi training", 1.0, "data"),
        ("pod 0-x7k2p created", 0.0, "controllers"),
        ("pod 0-x7k2p scheduled", 0.0, "pod"),
        ("pod 0-x7k2p image pulled", 61.0, "pod"),
        ("pod 0-x7k2p container started", 2.0, "pod"),
        ("trainer launcher started", 0.0, "pod"),
        ("trainer worker process started (after torchrun, where it runs)", 1.5, "trainer"),
        ("trainer imports", 7.5, "trainer"),
        ("trainer DeepSpeed imported, process group joined", 0.4, "trainer"),
        ("trainer data, model, engine", 2.6, "trainer"),
        ("trainer checkpoint loaded", 0.0, "trainer"),
        ("trainer metric sinks, checkpoint writer", 0.8, "trainer"),
        (FIRST_STEP, 0.2, "trainer"),
    ]
    # The engine's 3 s before the image and the second between the image and the TrainJob are bookkeeping.
    assert report["needless_waits"] == []
    printed = timeline.render("up", report)
    assert printed.splitlines()[0] == "up: 184.0 s; critical path (start s, seconds, idle before):"
    assert "    3.0   100.0    3.0  pulumi trainer-image [program]" in printed


def test_an_image_already_present_waited_for_the_pre_pull_on_its_node() -> None:
    prepull = pod(
        "trainer-image-prepull-abcde", "node2", created=T0 + 104, scheduled=T0 + 104, started=T0 + 160
    )
    prepull["status"]["containerStatuses"][0]["name"] = "pull"
    job_pod = pod("gpt-e2e-node-0-0-x7k2p", "node2", created=T0 + 106, scheduled=T0 + 106, started=T0 + 162)
    events = [
        kubelet("trainer-image-prepull-abcde", "Pulling", T0 + 104),
        kubelet("trainer-image-prepull-abcde", "Pulled", T0 + 159, "Successfully pulled image ... in 55s"),
        kubelet(
            "gpt-e2e-node-0-0-x7k2p", "Pulled", T0 + 161, "Container image ... already present on machine"
        ),
    ]
    daemonset = f"{STACK}trainstack:index:TrainerImage$kubernetes:apps/v1:DaemonSet::trainer-image-prepull"
    engine = [
        *engine_events(),
        step("resourcePreEvent", 20, T0 + 103, daemonset),
        step("resOutputsEvent", 21, T0 + 104, daemonset),
    ]
    state = deployment()
    state["resources"].append(
        {"urn": daemonset, "dependencies": [IMAGE], "propertyDependencies": {"spec": [IMAGE]}}
    )
    line = timeline.up_timeline(T0, engine, state, [job_pod], [prepull], events, start_record(163))
    names = [link.name for link in line.critical_path(FIRST_STEP)]
    assert names[:7] == [
        ROOT,
        "pulumi trainer-image",
        "pulumi trainer-image-prepull",
        "pre-pull prepull-abcde created",
        "pre-pull prepull-abcde scheduled",
        "pre-pull prepull-abcde image pulled",
        "pod 0-x7k2p image already present",
    ]


def test_recovery_timeline_from_the_eviction_to_the_first_step_after_the_resume() -> None:
    old = pod("gpt-e2e-node-0-0-aaaaa", "node2", created=T0 - 300, scheduled=T0 - 300, started=T0 - 290,
              finished=T0 + 6)  # fmt: skip
    new = pod("gpt-e2e-node-0-0-bbbbb", "node2", created=T0 + 9, scheduled=T0 + 9, started=T0 + 11)
    events = [
        kubelet(new["metadata"]["name"], "Pulled", T0 + 10, "Container image ... already present on machine")
    ]
    line = timeline.recovery_timeline(
        evicted=T0 + 0.2,
        eviction_returned=T0 + 0.3,
        preempted={"event": "preempted", "signal_at": T0 + 0.5, "at": T0 + 2.0},
        old_pods=[{"obj": old, "deleted_at": T0 + 8.5}],
        new_pods=[new],
        k8s_events=events,
        start=start_record(first=11.2, resumed=True),
    )
    report = line.report(FIRST_STEP)
    assert report["total_s"] == 24.0
    path = {link["name"]: link["seconds"] for link in report["critical_path"]}
    assert list(path)[:8] == [
        "eviction requested",
        "SIGTERM reached the trainer",
        "stop checkpoint published",
        "old pod 0-aaaaa exited",
        "old pod 0-aaaaa deleted",
        "new pod 0-bbbbb created",
        "new pod 0-bbbbb scheduled",
        "new pod 0-bbbbb image already present",
    ]
    assert path["old pod 0-aaaaa exited"] == 4.0 and path["trainer checkpoint loaded"] == 0.6
    assert "old pod 0-aaaaa exited: started" not in " ".join(report["needless_waits"])


def test_kubectl_watch_stream_is_folded_by_pod_with_its_deletion() -> None:
    first = {
        "type": "ADDED",
        "object": {"metadata": {"uid": "u1", "name": "p"}, "status": {"phase": "Pending"}},
    }
    second = {
        "type": "MODIFIED",
        "object": {"metadata": {"uid": "u1", "name": "p"}, "status": {"phase": "Running"}},
    }
    gone = {
        "type": "DELETED",
        "object": {"metadata": {"uid": "u1", "name": "p"}, "status": {"phase": "Failed"}},
    }
    stream = "".join(json.dumps(o, indent=4) + "\n" for o in (first, second, gone))
    objects = list(timeline.watch_objects(stream + '{\n    "type": "ADD'))  # a torn last object
    assert objects == [first, second, gone]
    pods = timeline.fold_watch(zip([1.0, 2.0, 3.5], objects, strict=True))
    assert pods["u1"].first_seen == 1.0 and pods["u1"].deleted_at == 3.5
    assert pods["u1"].obj["status"]["phase"] == "Failed"


@pytest.mark.parametrize("indent", [None, 4])
def test_watch_lines_end_an_object_on_one_line_or_pretty_printed(indent: int | None) -> None:
    """kubectl v1.33.13 prints each watch event whole on one line (the first real `--only speed` run: no pod
    was caught while the reader waited for a closing brace alone); pretty-printed, the brace ends it."""
    events = [
        {"type": "ADDED", "object": {"metadata": {"uid": "u1", "name": "p"}, "spec": {"x": {"y": [1]}}}},
        {
            "type": "MODIFIED",
            "object": {"metadata": {"uid": "u1", "name": "p"}, "status": {"phase": "Running"}},
        },
    ]
    lines = timeline.WatchLines()
    caught = []
    for event in events:
        text = json.dumps(event, indent=indent) + "\n"
        fed = [lines.feed(line) for line in text.splitlines(keepends=True)]
        assert all(not objects for objects in fed[:-1])  # nothing before the object is whole
        caught += fed[-1]
    assert caught == events and lines.pending == ""


def test_a_torn_last_line_of_the_event_log_is_left_out() -> None:
    text = '{"sequence": 1, "timestamp": 5}\n{"sequence": 2, "timest'
    assert timeline.read_event_log(text) == [{"sequence": 1, "timestamp": 5}]
