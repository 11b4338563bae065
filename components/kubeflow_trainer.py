"""Kubeflow Trainer (with JobSet) from its Helm chart: the upstream OCI chart, a chart repository or a local copy."""

from __future__ import annotations

import copy
import hashlib
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pulumi
import pulumi_kubernetes as k8s
import yaml

from components.settings import REPO_ROOT, Values, error
from components.shell import KubeconfigFile, kubectl_command, script

TRAINER_NAMESPACE = "kubeflow-system"
TRAINER_CHART = "oci://ghcr.io/kubeflow/charts/kubeflow-trainer"
TRAINER_CHART_NAME = "kubeflow-trainer"
# Helm's post-renderer (components/webhook_patch.py), relative to the project so a moved checkout changes
# nothing; the patch's content hash goes into the Release, so editing it upgrades.
K3S_WEBHOOK_POSTRENDER = Path("components") / "k3s_webhook_postrender.sh"
WEBHOOK_PATCH_FILES = (K3S_WEBHOOK_POSTRENDER, Path("components") / "webhook_patch.py")
# The chart's runtime installer (a hook Job that runs `apk add kubectl`) stays off: the stack brings its own.
BASE_VALUES: dict[str, Any] = {"runtimes": {"defaultEnabled": False}}
# Alpha in v2.3.0: the pods write status.trainerStatus (trainer/progress.py).
TRAINJOB_STATUS_VALUES: dict[str, Any] = {"manager": {"config": {"featureGates": {"TrainJobStatus": True}}}}
WEBHOOK_CONFIGURATIONS = (
    "validatingwebhookconfiguration/validator.trainer.kubeflow.org",
    "mutatingwebhookconfiguration/defaulter.trainer.kubeflow.org",
    "validatingwebhookconfiguration/jobset-validating-webhook-configuration",
    "mutatingwebhookconfiguration/jobset-mutating-webhook-configuration",
)

READINESS_SCRIPT = script("kubeflow_trainer_ready.sh")
# CRDs from the chart's crds/ directory, which Helm never deletes: the stack deletes those it added.
# upstream: kubernetes-sigs/jobset charts/jobset/crds/ @ v0.12.0
JOBSET_CRD = "jobsets.jobset.x-k8s.io"
CHART_CRDS = (JOBSET_CRD,)
# Helm never upgrades a CRD under crds/: an older JobSet's schema would prune fields (jobset_schema_gaps).
JOBSET_API_VERSION = "v1alpha2"
JOBSET_RELEASE = "v0.12.0"
JOBSET_CRD_URL = (
    f"https://raw.githubusercontent.com/kubernetes-sigs/jobset/{JOBSET_RELEASE}"
    "/config/components/crd/bases/jobset.x-k8s.io_jobsets.yaml"
)
CRDS_RECORD_SCRIPT = script("kubeflow_trainer_crds_record.sh")
CRDS_DELETE_SCRIPT = script("kubeflow_trainer_crds_delete.sh")


@dataclass(frozen=True)
class KubeflowTrainerArgs:
    version: str
    ignore_webhook_failures: bool  # every Trainer and JobSet webhook to failurePolicy Ignore (for k3s)
    chart: str = TRAINER_CHART  # an oci:// reference, a chart repository URL, or a local chart directory
    values: Mapping[str, Any] = field(default_factory=dict)  # merged over BASE_VALUES


def merged_values(base: Mapping[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    """Mappings merged key by key, anything else replaced."""
    result = copy.deepcopy(dict(base))
    for key, value in extra.items():
        if isinstance(value, Mapping) and isinstance(result.get(key), Mapping):
            result[key] = merged_values(result[key], value)
        else:
            result[key] = copy.deepcopy(value)
    return result


def chart_source(chart: str, version: str) -> dict[str, Any]:
    """The Release's chart, version and repository."""
    if chart.startswith(("http://", "https://")):
        return {"chart": TRAINER_CHART_NAME, "version": version, "repository_opts": {"repo": chart}}
    if chart.startswith("oci://"):
        return {"chart": chart, "version": version}
    return {"chart": chart}  # a local chart carries its own (checked) version


def _schema_gaps(value: Any, schema: Mapping[str, Any], path: str) -> list[str]:
    """What schema would prune (an undefined field) or refuse (a value off its enum)."""
    if isinstance(value, Mapping):
        properties = schema.get("properties")
        if properties is None:  # free-form (preserve-unknown-fields, additionalProperties): kept as is
            return []
        gaps = []
        for key, item in value.items():
            if key in properties:
                gaps += _schema_gaps(item, properties[key], f"{path}.{key}")
            else:
                gaps.append(f"{path}.{key}")
        return gaps
    if isinstance(value, list):
        items = schema.get("items") or {}
        return sorted({gap for item in value for gap in _schema_gaps(item, items, f"{path}[]")})
    if "enum" in schema and value not in schema["enum"]:
        return [f"{path}={value} (allowed: {', '.join(map(str, schema['enum']))})"]
    return []


def jobset_schema_gaps(crd: Mapping[str, Any], jobset_spec: Mapping[str, Any]) -> list[str]:
    """What of the runtime's JobSet spec the installed CRD would silently prune or refuse, or no such version."""
    versions = {v.get("name"): v for v in (crd.get("spec") or {}).get("versions") or []}
    version = versions.get(JOBSET_API_VERSION)
    if version is None or not version.get("served"):
        return [
            f"no served version {JOBSET_API_VERSION} (it serves {', '.join(map(str, versions)) or 'none'})"
        ]
    schema = version.get("schema", {}).get("openAPIV3Schema", {}).get("properties", {}).get("spec", {})
    return _schema_gaps(jobset_spec, schema, "spec")


def check_jobset_crd(crd: Mapping[str, Any] | None, jobset_spec: Mapping[str, Any], key: str) -> None:
    """An existing cluster's JobSet CRD (None: none) must keep what the runtime needs. key: the stack key."""
    gaps = jobset_schema_gaps(crd, jobset_spec) if crd else []
    if gaps:
        raise error(
            key,
            f"the cluster's {JOBSET_CRD} CRD lacks {'; '.join(gaps)}, which the training runtime needs"
            f" (JobSet {JOBSET_RELEASE}, what the Trainer chart brings; Helm never upgrades a CRD the cluster"
            f" has): upgrade JobSet there, its CRD with kubectl apply --server-side --force-conflicts -f"
            f" {JOBSET_CRD_URL}",
        )


def trainer_args(values: Values, on_k3s: bool) -> KubeflowTrainerArgs:
    version = str(values["trainerVersion"])
    chart = str(values["trainerChart"])
    if not chart.startswith(("oci://", "http://", "https://")):
        chart_file = Path(os.path.expanduser(chart)).resolve() / "Chart.yaml"  # pathlib's raises for ~unknown
        if not chart_file.is_file():
            raise error(
                "trainerChart",
                f"must be an oci:// reference, a chart repository URL or a chart directory; {chart_file} does not exist",
            )
        metadata = yaml.safe_load(chart_file.read_text()) or {}
        found = (metadata.get("name"), str(metadata.get("version")))
        if found != (TRAINER_CHART_NAME, version):
            raise error(
                "trainerChart",
                f"must hold {TRAINER_CHART_NAME} version {version} (trainerVersion), {chart_file} has {found[0]} {found[1]}",
            )
        chart = str(chart_file.parent)
    try:
        extra = yaml.safe_load(str(values["trainerChartValues"])) or {}
        problem = "" if isinstance(extra, dict) else f", got {extra!r}"
    except yaml.YAMLError as failure:
        problem = f": {' '.join(str(failure).split())}"
    if problem:
        raise error("trainerChartValues", f"must be a YAML or JSON mapping of chart values{problem}")
    if values["trainJobProgress"]:
        extra = merged_values(TRAINJOB_STATUS_VALUES, extra)  # trainerChartValues may still turn it off
    return KubeflowTrainerArgs(version=version, ignore_webhook_failures=on_k3s, chart=chart, values=extra)


def webhook_patch_digest() -> str:
    content = b"".join((REPO_ROOT / path).read_bytes() for path in WEBHOOK_PATCH_FILES)
    return hashlib.sha256(content).hexdigest()[:16]


class KubeflowTrainer(pulumi.ComponentResource):
    """The Trainer Helm release and a readiness gate that TrainJobs wait for."""

    def __init__(
        self,
        name: str,
        args: KubeflowTrainerArgs,
        *,
        kubeconfig: pulumi.Input[str] | KubeconfigFile,
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        super().__init__("trainstack:index:KubeflowTrainer", name, None, opts)
        # Not Helm's create_namespace, so that `pulumi destroy` removes it.
        namespace = k8s.core.v1.Namespace(
            f"{name}-namespace",
            metadata={"name": TRAINER_NAMESPACE},
            opts=pulumi.ResourceOptions(parent=self),
        )
        # helm.v3.Release: a v4 Chart renders at preview, before the cluster exists (pulumi-kubernetes#3027);
        # so the webhook patch is a Helm post-renderer, not a Pulumi transform.
        patched = args.ignore_webhook_failures
        # Before the release (so destroyed after it): which of the charts' crds/ CRDs this stack adds.
        crds = kubectl_command(
            f"{name}-crds",
            kubeconfig=kubeconfig,
            script=CRDS_RECORD_SCRIPT,
            delete=CRDS_DELETE_SCRIPT,
            environment={"CHART_CRDS": " ".join(CHART_CRDS)},
            opts=pulumi.ResourceOptions(parent=self, depends_on=[namespace]),
        )
        release = k8s.helm.v3.Release(
            name,
            name=TRAINER_CHART_NAME,
            **chart_source(args.chart, args.version),
            namespace=TRAINER_NAMESPACE,
            values=merged_values(BASE_VALUES, args.values),
            postrender=f"./{K3S_WEBHOOK_POSTRENDER.as_posix()}" if patched else None,
            description=f"trainstack webhook patch {webhook_patch_digest()}" if patched else None,
            timeout=600,
            opts=pulumi.ResourceOptions(parent=self, depends_on=[namespace, crds]),
        )
        kubectl_command(  # the gate TrainJobs wait for (they depend on this component)
            f"{name}-ready",
            kubeconfig=kubeconfig,
            script=READINESS_SCRIPT,
            environment={"NAMESPACE": TRAINER_NAMESPACE, "WEBHOOKS": " ".join(WEBHOOK_CONFIGURATIONS)},
            triggers=[release.version],
            opts=pulumi.ResourceOptions(parent=self, depends_on=[release]),
        )
        self.register_outputs({"status": release.status})
