"""The Kubeflow Trainer component: upstream chart, k3s post-renderer and the readiness gate."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import pulumi
import pytest
import yaml

from components.kubeflow_trainer import (
    CHART_CRDS,
    CRDS_DELETE_SCRIPT,
    CRDS_RECORD_SCRIPT,
    K3S_WEBHOOK_POSTRENDER,
    READINESS_SCRIPT,
    TRAINER_NAMESPACE,
    WEBHOOK_CONFIGURATIONS,
    WEBHOOK_PATCH_FILES,
    KubeflowTrainer,
    KubeflowTrainerArgs,
    merged_values,
    webhook_patch_digest,
)
from components.settings import REPO_ROOT
from components.shell import KUBECONFIG_PRELUDE, script
from tests.support.shell_stubs import run_file, run_text, stub_tools
from tests.support.stack_helpers import contains_secret, evaluate, reveal, without_secrets


def release_inputs(args: KubeflowTrainerArgs) -> dict[str, Any]:
    run = evaluate(lambda: KubeflowTrainer("trainer", args, kubeconfig="kubeconfig"))
    return run.one("kubernetes:helm.sh/v3:Release").inputs


@pytest.mark.parametrize("on_k3s", [False, True])
def test_release_installs_the_pinned_upstream_chart_without_its_runtime_installer(on_k3s: bool) -> None:
    args = KubeflowTrainerArgs("2.3.0", ignore_webhook_failures=on_k3s)
    run = evaluate(lambda: KubeflowTrainer("trainer", args, kubeconfig="kubeconfig"))
    release = run.one("kubernetes:helm.sh/v3:Release")
    assert release.inputs["chart"] == "oci://ghcr.io/kubeflow/charts/kubeflow-trainer"
    assert release.inputs["version"] == "2.3.0"
    # The chart's runtimes add Helm hook Jobs that `apk add kubectl` from the internet: off.
    assert release.inputs["values"] == {"runtimes": {"defaultEnabled": False}}
    assert release.inputs["namespace"] == TRAINER_NAMESPACE
    assert release.inputs.get("postrender") == ("./components/k3s_webhook_postrender.sh" if on_k3s else None)
    assert run.depends_on(release, run.one("kubernetes:core/v1:Namespace"))


def test_chart_from_a_repository_url_or_a_local_directory() -> None:
    from_repository = release_inputs(KubeflowTrainerArgs("2.3.0", False, chart="https://charts.example/kf"))
    assert from_repository["chart"] == "kubeflow-trainer" and from_repository["version"] == "2.3.0"
    assert from_repository["repositoryOpts"] == {"repo": "https://charts.example/kf"}
    local = release_inputs(KubeflowTrainerArgs("2.3.0", False, chart="/charts/kubeflow-trainer-2.3.0"))
    assert local["chart"] == "/charts/kubeflow-trainer-2.3.0" and "version" not in local


def test_extra_values_merge_over_the_stack_values_key_by_key() -> None:
    extra = {"jobset": {"image": {"repository": "mirror/jobset", "tag": "v0.12.0"}}, "runtimes": {"x": 1}}
    values = release_inputs(KubeflowTrainerArgs("2.3.0", False, values=extra))["values"]
    assert values == {
        "runtimes": {"defaultEnabled": False, "x": 1},
        "jobset": {"image": {"repository": "mirror/jobset", "tag": "v0.12.0"}},
    }
    assert merged_values({"a": {"b": 1}}, {"a": 2}) == {"a": 2}


def test_post_renderer_is_an_executable_file_of_the_project() -> None:
    path = REPO_ROOT / K3S_WEBHOOK_POSTRENDER
    assert not K3S_WEBHOOK_POSTRENDER.is_absolute()
    assert path.is_file() and os.access(path, os.X_OK)


def test_an_edited_webhook_patch_upgrades_the_release_and_a_moved_checkout_does_not(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Helm runs the post-renderer only at install and upgrade, and the provider diffs inputs only."""
    args = KubeflowTrainerArgs("2.3.0", ignore_webhook_failures=True)
    before = release_inputs(args)
    assert before["description"] == f"trainstack webhook patch {webhook_patch_digest()}"
    # The same patch in another checkout: identical inputs, no diff.
    moved = tmp_path / "elsewhere"
    for path in WEBHOOK_PATCH_FILES:
        (moved / path).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(REPO_ROOT / path, moved / path)
    monkeypatch.setattr("components.kubeflow_trainer.REPO_ROOT", moved)
    assert release_inputs(args) == before
    # An edited patch: another description, so the provider upgrades the release and Helm re-renders.
    (moved / "components" / "webhook_patch.py").write_text("# edited\n")
    assert release_inputs(args)["description"] != before["description"]


def test_readiness_gate_waits_for_the_release_controllers_and_webhooks() -> None:
    # The cluster's kubeconfig reaches the component as a secret Output, as the Cluster component makes it.
    run = evaluate(
        lambda: KubeflowTrainer(
            "trainer", KubeflowTrainerArgs("2.3.0", False), kubeconfig=pulumi.Output.secret("secret-kc")
        )
    )
    gate = run.one("command:local:Command", "trainer-ready")
    assert run.depends_on(gate, run.one("kubernetes:helm.sh/v3:Release"))
    assert gate.inputs["create"] == KUBECONFIG_PRELUDE + READINESS_SCRIPT
    assert script("kubeflow_trainer_ready.sh") == READINESS_SCRIPT
    assert contains_secret(gate.inputs["environment"])
    assert reveal(gate.inputs["environment"]) == {
        "TRAINSTACK_KUBECONFIG": "secret-kc",
        "NAMESPACE": TRAINER_NAMESPACE,
        "WEBHOOKS": " ".join(WEBHOOK_CONFIGURATIONS),
    }
    assert "secret-kc" not in repr(without_secrets(gate.inputs))
    assert not contains_secret(gate.inputs["create"])


# The admission webhook configurations and the Services they call, as the Trainer 2.3.0 chart (with its JobSet
# 0.12.0 subchart) renders them with the stack's values (tests/upstream/kubeflow-trainer/README.md).
UPSTREAM_WEBHOOKS = REPO_ROOT / "tests" / "upstream" / "kubeflow-trainer" / "webhooks.yaml"


def upstream_webhook_services() -> dict[str, list[str]]:
    """kind/name of each rendered webhook configuration -> the namespace/name of every Service it calls."""
    services = {}
    for document in yaml.safe_load_all(UPSTREAM_WEBHOOKS.read_text()):
        if document and document["kind"].endswith("WebhookConfiguration"):
            called = {
                f"{hook['clientConfig']['service']['namespace']}/{hook['clientConfig']['service']['name']}"
                for hook in document["webhooks"]
                if "service" in hook["clientConfig"]
            }
            services[f"{document['kind'].lower()}/{document['metadata']['name']}"] = sorted(called)
    return services


# kubectl: the Deployments wait succeeds; the webhook configurations the chart renders exist (a name in
# $HOME/present), each asked for its Services answers what the chart's own configuration calls
# ($HOME/services/<kind>/<name>); a CA bundle shows from the second look on, and each Service's EndpointSlices
# list a ready endpoint from the third look on (looks counted in files). date reads the clock from STUB_NOW, a
# file it moves 400 s on at every call, when set; else it answers 0.
READINESS_STUBS = {
    "kubectl": """case "$*" in
  *wait*) exit 0 ;;
  *--ignore-not-found*) grep -qx "$2" "$HOME/present" && echo "$2" ;;
  *caBundle*)
    looks=$(cat "$HOME/looks" 2>/dev/null || echo 0); echo $((looks + 1)) > "$HOME/looks"
    if [ "$looks" -ge 1 ]; then echo Y2E=; fi ;;
  *clientConfig.service*) cat "$HOME/services/$2" ;;
  *endpointslices*)
    seen="$HOME/endpoints-$(echo "$*" | md5sum | cut -c1-8)"
    looks=$(cat "$seen" 2>/dev/null || echo 0); echo $((looks + 1)) > "$seen"
    if [ "$looks" -ge 2 ]; then echo 10.244.0.7; fi ;;
esac""",
    "sleep": "exit 0",
    "date": """if [ -z "$STUB_NOW" ]; then echo 0; exit 0; fi
read -r now < "$STUB_NOW"; echo "$now"; echo $((now + 400)) > "$STUB_NOW\"""",
}


def readiness_environment(tmp_path: Path) -> tuple[dict[str, str], Path]:
    environment, log = stub_tools(tmp_path, READINESS_STUBS)
    services = upstream_webhook_services()
    (tmp_path / "present").write_text("".join(f"{name}\n" for name in services))
    for name, called in services.items():
        (tmp_path / "services" / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "services" / name).write_text("".join(f"{service}\n" for service in called))
    webhooks = " ".join(WEBHOOK_CONFIGURATIONS)
    return {**environment, "NAMESPACE": TRAINER_NAMESPACE, "WEBHOOKS": webhooks, "STUB_NOW": ""}, log


def test_the_gate_names_every_webhook_configuration_the_chart_renders() -> None:
    assert sorted(upstream_webhook_services()) == sorted(WEBHOOK_CONFIGURATIONS)


def test_readiness_script_waits_for_a_ca_bundle_on_every_webhook_that_exists(tmp_path: Path) -> None:
    environment, log = readiness_environment(tmp_path)
    (tmp_path / "present").write_text(f"{WEBHOOK_CONFIGURATIONS[0]}\n{WEBHOOK_CONFIGURATIONS[1]}\n")
    result = run_file("kubeflow_trainer_ready.sh", environment)
    assert result.stdout == "Kubeflow Trainer is ready\n"
    calls = log.read_text().splitlines()
    assert (
        calls[0]
        == "kubectl -n kubeflow-system wait deployment --all --for=condition=Available --timeout=600s"
    )
    looked_up = [call.split()[2] for call in calls if "--ignore-not-found" in call]
    assert looked_up == list(WEBHOOK_CONFIGURATIONS)
    # The first webhook's bundle is empty at first: asked twice, with a sleep between; the second's once.
    bundles = [call.split()[2] for call in calls if "caBundle" in call]
    assert bundles == [WEBHOOK_CONFIGURATIONS[0], WEBHOOK_CONFIGURATIONS[0], WEBHOOK_CONFIGURATIONS[1]]


def test_readiness_script_waits_for_a_ready_endpoint_of_every_webhook_service(tmp_path: Path) -> None:
    """Issue 23, case 8: an Available Deployment is not a Service with endpoints; the gate waits until every
    Service the chart's webhooks call lists a ready endpoint in its EndpointSlices."""
    environment, log = readiness_environment(tmp_path)
    result = run_file("kubeflow_trainer_ready.sh", environment)
    assert result.stdout == "Kubeflow Trainer is ready\n", result.stderr
    asked = [call for call in log.read_text().splitlines() if "endpointslices" in call]
    expected = sorted({service for called in upstream_webhook_services().values() for service in called})
    assert expected, "the chart's webhooks call Services"
    for service in expected:
        namespace, name = service.split("/")
        mine = [
            call
            for call in asked
            if f"-n {namespace} " in call and f"kubernetes.io/service-name={name} " in call
        ]
        assert len(mine) == 3, (service, asked)  # empty twice, then ready
        assert "conditions.ready==true" in mine[0]
    assert len(asked) == 3 * len(expected)


def test_readiness_script_gives_up_after_300_s_without_a_ca_bundle(tmp_path: Path) -> None:
    environment, _ = readiness_environment(tmp_path)
    (tmp_path / "now").write_text("1000\n")
    result = run_file(
        "kubeflow_trainer_ready.sh", {**environment, "STUB_NOW": str(tmp_path / "now")}, check=False
    )
    assert result.returncode == 1
    assert result.stderr == f"{WEBHOOK_CONFIGURATIONS[0]} has no CA bundle after 300s\n"


def test_readiness_script_gives_up_after_300_s_without_a_ready_endpoint(tmp_path: Path) -> None:
    environment, _ = readiness_environment(tmp_path)
    (tmp_path / "looks").write_text("5\n")  # every CA bundle is there
    (tmp_path / "now").write_text("1000\n")
    result = run_file(
        "kubeflow_trainer_ready.sh", {**environment, "STUB_NOW": str(tmp_path / "now")}, check=False
    )
    assert result.returncode == 1
    first = sorted({s for called in upstream_webhook_services().values() for s in called})[0]
    assert result.stderr == f"the webhook Service {first} has no ready endpoint after 300s\n"


def test_the_crds_helm_never_deletes_are_recorded_before_the_release_and_deleted_after_it() -> None:
    run = evaluate(
        lambda: KubeflowTrainer("trainer", KubeflowTrainerArgs("2.3.0", False), kubeconfig="secret-kc")
    )
    crds = run.one("command:local:Command", "trainer-crds")
    release = run.one("kubernetes:helm.sh/v3:Release")
    # Created before the release, so `pulumi destroy` deletes it (and the CRDs) after the release is gone.
    assert run.depends_on(release, crds)
    assert crds.inputs["create"] == KUBECONFIG_PRELUDE + CRDS_RECORD_SCRIPT
    assert crds.inputs["delete"] == KUBECONFIG_PRELUDE + CRDS_DELETE_SCRIPT
    assert crds.inputs["environment"] == {
        "TRAINSTACK_KUBECONFIG": "secret-kc",
        "CHART_CRDS": " ".join(CHART_CRDS),
    }
    assert CHART_CRDS == ("jobsets.jobset.x-k8s.io",)


# kubectl knows the CRDs named in $HOME/existing (one per line).
CRD_STUBS = {
    "kubectl": """case "$*" in
  "get crd "*" --ignore-not-found -o name") if grep -qx "$3" "$HOME/existing"; then echo "crd/$3"; fi ;;
  "get crd "*) exit 1 ;;
esac"""
}


@pytest.mark.parametrize(
    ("existing", "recorded_before", "recorded"),
    [
        ("", "", "a.x\nb.y\n"),  # a fresh cluster: the stack adds both
        ("b.y", "", "a.x\n"),  # b.y was there before the stack: never the stack's to delete
        ("a.x\nb.y", "a.x", "a.x\n"),  # an update after the install keeps what it added
    ],
)
def test_crds_record_names_exactly_the_crds_the_stack_adds(
    tmp_path: Path, existing: str, recorded_before: str, recorded: str
) -> None:
    environment, _ = stub_tools(tmp_path, CRD_STUBS)
    (tmp_path / "existing").write_text(existing + "\n")
    result = run_file(
        "kubeflow_trainer_crds_record.sh",
        {**environment, "CHART_CRDS": "a.x b.y", "PULUMI_COMMAND_STDOUT": recorded_before},
    )
    assert result.stdout == recorded


def test_crds_record_fails_when_the_cluster_does_not_answer(tmp_path: Path) -> None:
    """An unreachable cluster must not make the stack claim (and later delete) a CRD it did not add."""
    environment, _ = stub_tools(tmp_path, {"kubectl": "exit 1"})
    # As the command runs it: kubeconfig.sh (which sets -euo pipefail) first.
    result = run_text(
        KUBECONFIG_PRELUDE + CRDS_RECORD_SCRIPT,
        {**environment, "CHART_CRDS": "a.x", "TRAINSTACK_KUBECONFIG": "kc"},
        check=False,
    )
    assert result.returncode != 0 and result.stdout == ""


@pytest.mark.parametrize(
    ("recorded", "calls"), [("a.x\n", ["kubectl delete crd a.x --ignore-not-found --wait=true"]), ("", [])]
)
def test_crds_delete_deletes_what_was_recorded_only(tmp_path: Path, recorded: str, calls: list[str]) -> None:
    environment, log = stub_tools(tmp_path, CRD_STUBS)
    run_file("kubeflow_trainer_crds_delete.sh", {**environment, "PULUMI_COMMAND_STDOUT": recorded})
    assert log.read_text().splitlines() == calls


def test_the_jobset_check_holds_the_runtime_against_the_upstream_crds() -> None:
    """The pinned JobSet's CRD takes every field and value of the runtime; an older one's pruned field, an
    action off its enum and a CRD without the version Trainer writes are each named."""
    from components.kubeflow_trainer import jobset_schema_gaps
    from components.training_runtime import training_runtime_spec
    from tests.components.test_training_job import job_args

    upstream = REPO_ROOT / "tests" / "upstream" / "jobset"
    spec = training_runtime_spec(job_args(), "image")["template"]["spec"]
    current, older = (
        yaml.safe_load((upstream / f"jobsets-{release}.yaml").read_text())
        for release in ("v0.12.0", "v0.10.0")
    )
    assert jobset_schema_gaps(current, spec) == []
    assert jobset_schema_gaps(older, spec) == ["spec.failurePolicy.rules[].onJobFailureMessagePatterns"]
    misspelt = {
        **spec,
        "failurePolicy": {**spec["failurePolicy"], "rules": [{"name": "x", "action": "Restart"}]},
    }
    (gap,) = jobset_schema_gaps(current, misspelt)
    assert gap.startswith("spec.failurePolicy.rules[].action=Restart (allowed: FailJobSet, RestartJobSet,")
    v1alpha1 = {"spec": {"versions": [{"name": "v1alpha1", "served": True}]}}
    assert jobset_schema_gaps(v1alpha1, spec) == ["no served version v1alpha2 (it serves v1alpha1)"]
