"""The Kubeflow Trainer component: upstream chart, k3s post-renderer and the readiness gate."""

from __future__ import annotations

import os
import subprocess

import pytest

from components.kubeflow_trainer import (
    K3S_WEBHOOK_POSTRENDER,
    READINESS_SCRIPT,
    TRAINER_NAMESPACE,
    WEBHOOK_CONFIGURATIONS,
    KubeflowTrainer,
    KubeflowTrainerArgs,
)
from tests.stack_helpers import contains_secret, evaluate


@pytest.mark.parametrize("on_k3s", [False, True])
def test_release_installs_the_pinned_upstream_chart(on_k3s: bool) -> None:
    args = KubeflowTrainerArgs("2.3.0", ignore_webhook_failures=on_k3s)
    run = evaluate(lambda: KubeflowTrainer("trainer", args, kubeconfig="kubeconfig"))
    release = run.one("kubernetes:helm.sh/v3:Release")
    assert release.inputs["chart"] == "oci://ghcr.io/kubeflow/charts/kubeflow-trainer"
    assert release.inputs["version"] == "2.3.0"
    assert release.inputs["values"] == {"runtimes": {"defaultEnabled": True}}
    assert release.inputs["namespace"] == TRAINER_NAMESPACE
    assert release.inputs.get("postrender") == (str(K3S_WEBHOOK_POSTRENDER) if on_k3s else None)
    assert run.depends_on(release, run.one("kubernetes:core/v1:Namespace"))


def test_post_renderer_is_an_executable_file() -> None:
    assert K3S_WEBHOOK_POSTRENDER.is_file() and os.access(K3S_WEBHOOK_POSTRENDER, os.X_OK)


def test_readiness_gate_waits_for_the_release_controllers_and_webhooks() -> None:
    run = evaluate(
        lambda: KubeflowTrainer("trainer", KubeflowTrainerArgs("2.3.0", False), kubeconfig="secret-kc")
    )
    gate = run.one("command:local:Command", "trainer-ready")
    assert run.depends_on(gate, run.one("kubernetes:helm.sh/v3:Release"))
    script = gate.inputs["create"]
    assert "wait deployment --all --for=condition=Available" in script
    for webhook in WEBHOOK_CONFIGURATIONS:
        assert webhook in script
    assert gate.inputs["environment"]["TRAINSTACK_KUBECONFIG"] == "secret-kc"
    assert not contains_secret(gate.inputs["create"])
    assert subprocess.run(["bash", "-n"], input=READINESS_SCRIPT, text=True, check=False).returncode == 0
