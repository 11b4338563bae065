"""The real run's own machinery, offline: the disk preflight and watch, the waits' diagnostics, the scenario
guard, and (with Docker) the fixture's teardown of the images it pushed."""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest

from tests.e2e import faults, harness, kind_run, object_storage
from tests.e2e.harness import E2EFailure, Report
from tests.e2e.real_run import NO_SPACE, Run
from tests.support.k8s_validation import KUBERNETES_VERSION
from tests.test_dockerfile import docker, docker_unavailable, engine_problem

# What the kubelet reported for the pod CI (stop 21) waited 30 minutes on, cut to its substance.
PULL_ERROR = (
    'failed to pull and unpack image "127.0.0.1:56107/trainstack/trainer@sha256:07d5": failed to extract layer '
    "sha256:8c97: write /var/lib/containerd/tmpmounts/m/opt/venv/libcusolverMg.so.12: " + NO_SPACE
)


def pod(name: str, node: str | None, phase: str = "Running", **status: Any) -> dict[str, Any]:
    spec = {"nodeName": node} if node else {}
    return {"metadata": {"name": name}, "spec": spec, "status": {"phase": phase, **status}}


def waiting(reason: str, message: str) -> dict[str, Any]:
    return {
        "containerStatuses": [{"name": "node", "state": {"waiting": {"reason": reason, "message": message}}}]
    }


def offline_run(tmp_path: Path, pods: list[dict[str, Any]], job: dict[str, Any] | None = None) -> Run:
    """A Run with no cluster behind it: its pods and TrainJob are the given ones."""
    run = Run.__new__(Run)
    run.job, run.stack, run.report = "gpt-faults", "e2e-faults", Report(path=tmp_path / "report.json")
    run.job_pods = lambda log=True: pods  # type: ignore[method-assign]
    run.trainjob = lambda: job  # type: ignore[method-assign]
    return run


def test_disk_problem_names_the_free_space_the_need_and_what_to_free(tmp_path: Path) -> None:
    assert harness.disk_problem(tmp_path, needed_gib=0) is None
    problem = harness.disk_problem(tmp_path, needed_gib=10**6)
    assert problem is not None
    free = harness.free_gib(tmp_path)
    assert problem.startswith(
        f"{free:.1f} GiB free on the filesystem of {tmp_path}, the run needs 1000000 GiB"
    )
    assert "`docker image prune`" in problem and "`go clean -cache`" in problem


def test_disk_watch_reports_the_least_free_space_it_saw(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    samples = iter([40.0, 31.5, 28.25, 35.0, 36.0])
    monkeypatch.setattr(harness, "free_gib", lambda path: next(samples, 36.0))
    watch = harness.DiskWatch(tmp_path, interval=0.001)
    watch.start()
    deadline = time.monotonic() + 10
    while watch.least > 28.25 and time.monotonic() < deadline:
        time.sleep(0.001)
    figures = watch.stop()
    watch.join(timeout=5)
    assert figures == {
        "path": str(tmp_path),
        "free_at_start_gib": 40.0,
        "least_free_gib": 28.2,
        "peak_used_gib": 11.8,
    }


def test_wait_until_says_what_it_saw_when_it_gives_up() -> None:
    with pytest.raises(E2EFailure) as failure:
        harness.wait_until("the thing", 0, lambda: None, interval=0, seen=lambda: "it was stuck")
    assert str(failure.value) == "the thing: not after 0 s; it was stuck"
    with pytest.raises(E2EFailure) as failure:
        harness.wait_until("the thing", 0, lambda: 0, interval=0)
    assert str(failure.value) == "the thing: not after 0 s"
    assert harness.wait_until("the thing", 0, lambda: "here", interval=0) == "here"


def test_pod_states_give_node_phase_and_every_container_reason(tmp_path: Path) -> None:
    pods = [
        pod("a", "node2", "Pending", **waiting("ErrImagePull", PULL_ERROR)),
        pod(
            "b", None, "Failed", reason="Evicted", message="The node was low on resource: ephemeral-storage."
        ),
        pod("c", "node1", containerStatuses=[{"name": "node", "state": {"running": {}}}]),
    ]
    assert offline_run(tmp_path, pods).pod_states() == [
        f"a on node2: Pending; node ErrImagePull: {PULL_ERROR}",
        "b on -: Failed (Evicted: The node was low on resource: ephemeral-storage.)",
        "c on node1: Running",
    ]


def test_a_job_whose_pod_cannot_pull_for_lack_of_disk_fails_at_once(tmp_path: Path) -> None:
    pods = [pod("a", "node2", "Pending", **waiting("ErrImagePull", PULL_ERROR)), pod("b", "node1")]
    run = offline_run(tmp_path, pods, job={"metadata": {"uid": "u"}, "status": {}})
    with pytest.raises(E2EFailure, match=r"TrainJob gpt-faults cannot start: \['a on node2: Pending; node "):
        run.wait_complete(3600)


def test_a_job_that_never_completes_fails_with_its_pods_states(tmp_path: Path) -> None:
    pods = [pod("a", "node2", "Pending", **waiting("ContainerCreating", ""))]
    run = offline_run(tmp_path, pods, job={"metadata": {"uid": "u"}, "status": {}})
    with pytest.raises(E2EFailure) as failure:
        run.wait_complete(0)
    assert str(failure.value) == (
        "TrainJob gpt-faults Complete: not after 0 s; its pods: ['a on node2: Pending; node ContainerCreating: ']"
    )


def test_a_complete_job_is_returned(tmp_path: Path) -> None:
    job = {"metadata": {"uid": "u"}, "status": {"conditions": [{"type": "Complete", "status": "True"}]}}
    assert offline_run(tmp_path, [], job=job).wait_complete(0, uid="u") is job


def test_node_loss_without_a_pod_off_the_control_plane_fails_its_phase_with_the_pods(tmp_path: Path) -> None:
    run = offline_run(tmp_path, [pod("a", "node1"), pod("b", None, "Pending")])
    faults.node_loss(run)
    assert run.report.data["node_loss"]["ok"] is False
    assert run.report.failures == [
        "node_loss: no training pod off node1 to lose: ['a on node1: Running', 'b on -: Pending']"
    ]


def test_the_scenarios_after_a_2_node_job_that_did_not_train_are_skipped(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    ran: list[str] = []

    def multinode(run: Run, base_image: str) -> None:
        run.report.data["multinode"] = {
            "ok": False,
            "error": "TrainJob gpt-faults Complete: not after 1800 s",
        }

    monkeypatch.setattr(faults, "multinode", multinode)
    for scenario in ("preemption", "node_loss", "resize", "out_of_band", "bad_config"):
        monkeypatch.setattr(faults, scenario, lambda run, name=scenario: ran.append(name))
    run = offline_run(tmp_path, [])
    run.report.data["training_rate"] = {}
    destroyed: list[tuple[str, ...]] = []
    monkeypatch.setattr(Run, "pulumi", lambda self, *args, **kwargs: destroyed.append(args))
    faults.run_faults(run, "base")
    assert ran == ["bad_config"]
    assert destroyed == [("destroy", "--yes", "--skip-preview")]
    for scenario in ("preemption", "node_loss", "resize", "out_of_band"):
        assert run.report.data[scenario] == {"ok": False, "skipped": "the 2-node job did not train"}


@pytest.mark.docker
def test_down_removes_the_images_pushed_to_its_registry_and_no_other(tmp_path: Path) -> None:
    problem = engine_problem()
    if problem:
        docker_unavailable(problem)
    (tmp_path / "context").mkdir()
    (tmp_path / "context" / "file").write_text("x")
    (tmp_path / "context" / "Dockerfile").write_text("FROM scratch\nCOPY file /file\n")
    ours = "127.0.0.1:5999/trainstack/trainer:t1"
    other_port = "127.0.0.1:59990/trainstack/trainer:t1"
    docker("build", "-q", "-t", ours, "-t", other_port, str(tmp_path / "context"))
    try:
        state = tmp_path / "state"
        state.mkdir()
        (state / "cluster.env").write_text("E2E_CLUSTER=trainstack-test-down\nREGISTRY=127.0.0.1:5999\n")
        subprocess.run(
            ["bash", str(harness.CLUSTER_SCRIPTS / "down.sh")],
            env={
                **os.environ,
                "E2E_CLUSTER": "trainstack-test-down",
                "E2E_STATE": str(state),
                "TRAINSTACK_E2E_CACHE": str(tmp_path / "cache"),
            },
            check=True,
            capture_output=True,
            timeout=120,
        )
        listed = docker("image", "ls", "--format", "{{.Repository}}:{{.Tag}}").stdout.split()
        assert ours not in listed and other_port in listed
        assert not state.exists()
    finally:
        subprocess.run(["docker", "image", "rm", "-f", ours, other_port], capture_output=True)


def test_a_second_run_is_refused_while_one_holds_the_machines_lock(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(harness, "CACHE", tmp_path)
    first = harness.hold_run_lock()
    assert first is not None
    assert harness.hold_run_lock() is None
    first.close()
    again = harness.hold_run_lock()
    assert again is not None
    again.close()


@pytest.mark.docker
def test_a_run_first_removes_the_clusters_an_interrupted_run_left_and_nothing_else(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    problem = engine_problem()
    if problem:
        docker_unavailable(problem)
    monkeypatch.setenv("HOME", str(tmp_path))  # kind's shared directories live under it
    (tmp_path / "context").mkdir()
    (tmp_path / "context" / "Dockerfile").write_text("FROM scratch\nLABEL dev.trainstack.test=leftovers\n")
    image = "trainstack-test-leftovers:1"
    docker("build", "-q", "-t", image, str(tmp_path / "context"))
    labels = {
        "test": "dev.trainstack.e2e-cluster=trainstack-test-left",
        "kind": f"{kind_run.KIND_CLUSTER_LABEL}=trainstack-test-left-kind",
        "other": f"{kind_run.KIND_CLUSTER_LABEL}=trainstack-test-other",
    }
    ids = {
        name: docker("create", "--label", label, image, "run").stdout.strip()
        for name, label in labels.items()
    }
    shared = kind_run.kind_shared_directory("trainstack-test-left-kind")
    shared.mkdir(parents=True)
    (shared / "step_000040").write_text("an earlier run's checkpoint")
    try:
        assert harness.remove_test_cluster("trainstack-test-left") == [
            "test cluster trainstack-test-left (1 containers)"
        ]
        assert kind_run.kind_cleanup(("trainstack-test-left-kind",), network=False) == [
            "kind cluster trainstack-test-left-kind",
            f"directory {shared}",
        ]
        left = docker(
            "ps", "-aq", "--no-trunc", "--filter", "label=dev.trainstack.test=leftovers"
        ).stdout.split()
        assert left == [ids["other"]] and not shared.exists()
        assert harness.remove_test_cluster("trainstack-test-left") == []
        assert kind_run.kind_cleanup(("trainstack-test-left-kind",), network=False) == []
    finally:
        subprocess.run(["docker", "rm", "-f", *ids.values()], capture_output=True)
        subprocess.run(["docker", "image", "rm", "-f", image], capture_output=True)


def test_the_in_cluster_s3_server_is_valid_kubernetes_and_keeps_its_credentials_in_a_secret() -> None:
    objects = object_storage.server_objects("127.0.0.1:5000/trainstack-e2e/s3:v1.8.0", "key-id", "key-secret")
    for document in objects:
        kubernetes_validate.validate(document, KUBERNETES_VERSION, strict=True)
    kinds = [document["kind"] for document in objects]
    assert kinds == ["Namespace", "Secret", "Deployment", "Service"]
    (deployment,) = (d for d in objects if d["kind"] == "Deployment")
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    assert "key-secret" not in json.dumps(deployment)
    assert container["envFrom"] == [{"secretRef": {"name": "s3-root"}}]
    assert container["args"] == ["--port", f":{object_storage.S3_PORT}", "--quiet", "posix", "/data"]


def test_resumed_from_is_the_newest_starts_tag_and_its_step(tmp_path: Path) -> None:
    run = offline_run(tmp_path, [])
    events: list[dict[str, Any]] = []
    run.metrics = lambda: events  # type: ignore[method-assign]
    assert run.resumed_from() == (None, None)  # no start yet
    events += [{"event": "start", "resumed_from": None}, {"event": "train", "step": 20}]
    assert run.resumed_from() == (None, None)  # a fresh start
    events.append({"event": "start", "resumed_from": "step_000040"})
    assert run.resumed_from() == ("step_000040", 40)
    assert len(run.starts()) == 2


def test_a_nested_report_keeps_another_stacks_phases_apart_and_saves_with_the_run(tmp_path: Path) -> None:
    report = Report(path=tmp_path / "report.json")
    with report.phase("up"):
        pass
    kind = report.nested("kind_dev")
    with kind.phase("up"):
        raise E2EFailure("no node Ready")
    kind.data["ready_s"] = 21.5
    kind.save()
    saved = json.loads((tmp_path / "report.json").read_text())
    assert saved["up"]["ok"] is True
    assert saved["kind_dev"]["up"]["ok"] is False and saved["kind_dev"]["ready_s"] == 21.5
    assert saved["failures"] == ["kind_dev.up: no node Ready"] == report.failures
