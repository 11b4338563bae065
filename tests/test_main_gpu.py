"""The GPU paths of the whole program under the mock engine (issue 23 cases 1 and 5)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.fake_apiserver import fake_api_server
from tests.support.stack_helpers import StackRun, run_stack

LOCAL_COMMAND = "command:local:Command"
RELEASE = "kubernetes:helm.sh/v3:Release"
RUNTIME = "kubernetes:trainer.kubeflow.org/v1alpha1:TrainingRuntime"


@pytest.fixture(scope="module")
def gpu_run() -> StackRun:
    return run_stack("gpu")


def test_everything_that_talks_to_the_cluster_waits_for_the_gpu_operator(gpu_run: StackRun) -> None:
    """Issue 23 case 5: the toolkit restarts k3s's containerd (and k3s) once installed; nothing else may
    talk to the cluster until the operator's gate passed, and at destroy all of it goes before the operator."""
    run = gpu_run
    ready = run.one(LOCAL_COMMAND, "gpu-operator-ready")
    operator_parts = {r.urn for r in run.resources if r.name.startswith("gpu-operator")}
    cluster_parts = {r.urn for r in run.resources if r.name.startswith("cluster")}
    talkers = [
        r
        for r in run.resources
        if r.custom
        and r.urn not in operator_parts | cluster_parts
        and (r.type.startswith("kubernetes:") or r.type.startswith("command:"))
        and not r.type.startswith("pulumi:providers")
        and r.name != "trainer-image-untag"  # removes this machine's image tag at destroy: no cluster
    ]
    assert {r.name for r in talkers} >= {
        "kubeflow-trainer",
        "kubeflow-trainer-ready",
        "access-namespace",
        "training-pods",
    }
    late = [r.name for r in talkers if not run.depends_on(r, ready)]
    assert late == []
    # The image import into k3s's containerd too.
    imports = [r for r in run.of_type(LOCAL_COMMAND) if r.name.startswith("trainer-image-k3s-import")]
    assert imports and all(run.depends_on(r, ready) for r in imports)


def test_an_existing_gpu_cluster_with_its_operator_gets_none_of_ours(tmp_path: Path) -> None:
    """Issue 23 case 1: nothing of the operator is declared, and the pods name the cluster's RuntimeClass."""
    objects = {
        "/api/v1/nodes": {
            "items": [
                {"metadata": {"name": n}, "status": {"allocatable": {"nvidia.com/gpu": "1"}}}
                for n in ("a", "b")
            ]
        },
        "/apis/nvidia.com/v1/clusterpolicies": {
            "items": [{"metadata": {"name": "cluster-policy"}, "spec": {}}]
        },
        "/apis/node.k8s.io/v1/runtimeclasses": {
            "items": [{"metadata": {"name": "nvidia"}, "handler": "nvidia"}]
        },
    }
    with fake_api_server(objects=objects) as server:
        kubeconfig = tmp_path / "kubeconfig"
        kubeconfig.write_text(server.kubeconfig())
        run = run_stack("existing", {"kubeconfigPath": str(kubeconfig), "gpusPerNode": 1})
    assert [r.name for r in run.resources if r.name.startswith("gpu-operator")] == []
    assert [r.name for r in run.of_type(RELEASE)] == ["kubeflow-trainer"]
    template = run.one(RUNTIME).plain["spec"]["template"]["spec"]["replicatedJobs"][0]["template"]["spec"]
    assert template["template"]["spec"]["runtimeClassName"] == "nvidia"
