"""The k3s webhook patch, on objects shaped like Trainer's and JobSet's webhook configurations."""

from __future__ import annotations

import copy
import io
import subprocess
from typing import Any

import pytest
import yaml

from components.kubeflow_trainer import K3S_WEBHOOK_POSTRENDER
from components.settings import REPO_ROOT
from components.webhook_patch import (
    ignore_webhook_failures,
    is_webhook_configuration,
    main,
    patch_manifest_stream,
)


def webhook(
    name: str, path: str, resources: list[str], failure_policy: str | None = "Fail"
) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "name": name,
        "admissionReviewVersions": ["v1"],
        "clientConfig": {
            "service": {
                "name": "kubeflow-trainer-controller-manager",
                "namespace": "kubeflow-system",
                "path": path,
            }
        },
        "sideEffects": "None",
        "rules": [
            {
                "apiGroups": ["trainer.kubeflow.org"],
                "apiVersions": ["v1alpha1"],
                "resources": resources,
                "operations": ["CREATE", "UPDATE"],
            }
        ],
    }
    if failure_policy is not None:
        entry["failurePolicy"] = failure_policy
    return entry


def configuration(kind: str, name: str, webhooks: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": kind,
        "metadata": {"name": name, "labels": {"app.kubernetes.io/name": "trainer"}},
        "webhooks": webhooks,
    }


# Each object is built anew by a function: a test that patches one in place (what a shallow copy in the patch
# would do) cannot hand an already-patched object to the next test.
def trainer_validator() -> dict[str, Any]:
    return configuration(
        "ValidatingWebhookConfiguration",
        "validator.trainer.kubeflow.org",
        [
            webhook(
                "validator.clustertrainingruntime.trainer.kubeflow.org",
                "/validate-trainer-kubeflow-org-v1alpha1-clustertrainingruntime",
                ["clustertrainingruntimes"],
            ),
            webhook(
                "validator.trainingruntime.trainer.kubeflow.org",
                "/validate-trainer-kubeflow-org-v1alpha1-trainingruntime",
                ["trainingruntimes"],
            ),
            webhook(
                "validator.trainjob.trainer.kubeflow.org",
                "/validate-trainer-kubeflow-org-v1alpha1-trainjob",
                ["trainjobs"],
            ),
        ],
    )


def trainer_defaulter() -> dict[str, Any]:
    return configuration(
        "MutatingWebhookConfiguration",
        "defaulter.trainer.kubeflow.org",
        [
            webhook(
                "defaulter.trainjob.trainer.kubeflow.org",
                "/mutate-trainer-kubeflow-org-v1alpha1-trainjob",
                ["trainjobs"],
            )
        ],
    )


# JobSet leaves failurePolicy unset (the API default is Fail).
def jobset_mutating() -> dict[str, Any]:
    return configuration(
        "MutatingWebhookConfiguration",
        "jobset-mutating-webhook-configuration",
        [
            webhook("mjobset.kb.io", "/mutate-jobset-x-k8s-io-v1alpha2-jobset", ["jobsets"], None),
            webhook("mpod.kb.io", "/mutate--v1-pod", ["pods"], None),
        ],
    )


def jobset_validating() -> dict[str, Any]:
    return configuration(
        "ValidatingWebhookConfiguration",
        "jobset-validating-webhook-configuration",
        [
            webhook("vjobset.kb.io", "/validate-jobset-x-k8s-io-v1alpha2-jobset", ["jobsets"], None),
            webhook("vpod.kb.io", "/validate--v1-pod", ["pods"], None),
        ],
    )


def webhook_configurations() -> list[dict[str, Any]]:
    return [trainer_validator(), trainer_defaulter(), jobset_mutating(), jobset_validating()]


def deployment() -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "kubeflow-trainer-controller-manager", "namespace": "kubeflow-system"},
        "spec": {
            "template": {
                "spec": {
                    "containers": [
                        {
                            "name": "manager",
                            "image": "ghcr.io/kubeflow/trainer/trainer-controller-manager:v2.3.0",
                        }
                    ]
                }
            }
        },
    }


# Not an admission webhook configuration, although it has a `webhooks` list.
def lookalike() -> dict[str, Any]:
    return {
        "apiVersion": "example.com/v1",
        "kind": "ValidatingWebhookConfiguration",
        "webhooks": [{"name": "x", "failurePolicy": "Fail"}],
    }


def test_every_webhook_of_trainer_and_jobset_ignores_failures() -> None:
    for config in webhook_configurations():
        patched = ignore_webhook_failures(config)
        assert [hook["failurePolicy"] for hook in patched["webhooks"]] == ["Ignore"] * len(config["webhooks"])
        # Nothing but failurePolicy changes.
        for before, after in zip(config["webhooks"], patched["webhooks"], strict=True):
            assert {k: v for k, v in after.items() if k != "failurePolicy"} == {
                k: v for k, v in before.items() if k != "failurePolicy"
            }
        assert patched["metadata"] == config["metadata"]


def test_the_input_is_not_modified() -> None:
    for config in [*webhook_configurations(), lookalike()]:
        original = copy.deepcopy(config)
        ignore_webhook_failures(config)
        assert config == original
    validator = trainer_validator()
    ignore_webhook_failures(validator)
    assert [hook["failurePolicy"] for hook in validator["webhooks"]] == ["Fail"] * 3


def test_other_objects_come_back_equal() -> None:
    for make in (
        deployment,
        lookalike,
        lambda: {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}},
    ):
        assert ignore_webhook_failures(make()) == make()
        assert not is_webhook_configuration(make())


def test_a_configuration_without_webhooks_is_left_alone() -> None:
    empty = configuration("MutatingWebhookConfiguration", "empty", [])
    del empty["webhooks"]
    assert ignore_webhook_failures(empty) == empty


def test_manifest_stream_patches_webhooks_and_keeps_the_rest() -> None:
    stream = (
        yaml.safe_dump_all([deployment(), *webhook_configurations()]) + "---\n"
    )  # Helm leaves empty documents
    documents = list(yaml.safe_load_all(patch_manifest_stream(stream)))
    assert documents[0] == deployment()
    assert [doc["metadata"]["name"] for doc in documents[1:]] == [
        c["metadata"]["name"] for c in webhook_configurations()
    ]
    assert all(hook["failurePolicy"] == "Ignore" for doc in documents[1:] for hook in doc["webhooks"])


def test_helm_post_renderer_executable_patches_stdin(tmp_path: Any) -> None:
    """Helm runs the file itself, from an arbitrary directory, with no arguments."""
    result = subprocess.run(
        [str(REPO_ROOT / K3S_WEBHOOK_POSTRENDER)],
        input=yaml.safe_dump_all([jobset_validating(), deployment()]),
        capture_output=True,
        text=True,
        cwd=tmp_path,
        check=True,
        timeout=60,
    )
    patched, deployment_out = yaml.safe_load_all(result.stdout)
    assert {hook["failurePolicy"] for hook in patched["webhooks"]} == {"Ignore"}
    assert deployment_out == deployment()


def test_the_stream_keeps_the_chart_s_key_order() -> None:
    """Helm keeps the post-rendered stream as the release's manifest (`helm get manifest`): in the chart's
    own key order it reads, and diffs, like the chart."""
    rendered = yaml.safe_dump(deployment(), sort_keys=False)
    assert rendered.startswith("apiVersion: apps/v1\nkind: Deployment\n")
    assert patch_manifest_stream(rendered) == rendered


def test_main_patches_stdin_to_stdout(monkeypatch: pytest.MonkeyPatch) -> None:
    """The entry point in-process (the executable test above runs it in a subprocess)."""
    stdout = io.StringIO()
    monkeypatch.setattr("sys.stdin", io.StringIO(yaml.safe_dump_all([jobset_mutating(), deployment()])))
    monkeypatch.setattr("sys.stdout", stdout)
    main()
    patched, unchanged = yaml.safe_load_all(stdout.getvalue())
    assert [hook["failurePolicy"] for hook in patched["webhooks"]] == ["Ignore", "Ignore"]
    assert unchanged == deployment()
