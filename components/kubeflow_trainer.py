"""Kubeflow Trainer (with JobSet and the default training runtimes) from the upstream Helm chart."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pulumi
import pulumi_kubernetes as k8s

from components.shell import assign, kubectl_command

TRAINER_NAMESPACE = "kubeflow-system"
TRAINER_CHART = "oci://ghcr.io/kubeflow/charts/kubeflow-trainer"
# Helm runs this executable on the rendered chart (see components/webhook_patch.py).
K3S_WEBHOOK_POSTRENDER = Path(__file__).resolve().parent / "k3s_webhook_postrender.sh"
# Admission webhook configurations of Trainer and of the JobSet it bundles (fixed names in both charts).
WEBHOOK_CONFIGURATIONS = (
    "validatingwebhookconfiguration/validator.trainer.kubeflow.org",
    "mutatingwebhookconfiguration/defaulter.trainer.kubeflow.org",
    "validatingwebhookconfiguration/jobset-validating-webhook-configuration",
    "mutatingwebhookconfiguration/jobset-mutating-webhook-configuration",
)

# The controllers are Available and their webhooks serve with a CA bundle (the controllers inject it
# after start-up): only then is a TrainJob admitted and reconciled.
READINESS_SCRIPT = f"""{assign("NAMESPACE", TRAINER_NAMESPACE)}
kubectl -n "$NAMESPACE" wait deployment --all --for=condition=Available --timeout=600s
deadline=$(( $(date +%s) + 300 ))
for webhook in {" ".join(WEBHOOK_CONFIGURATIONS)}; do
  kubectl get "$webhook" --ignore-not-found -o name | grep -q . || continue
  until [ -n "$(kubectl get "$webhook" -o jsonpath='{{.webhooks[0].clientConfig.caBundle}}')" ]; do
    if [ "$(date +%s)" -ge "$deadline" ]; then echo "$webhook has no CA bundle after 300s" >&2; exit 1; fi
    sleep 3
  done
done
echo "Kubeflow Trainer is ready"
"""


@dataclass(frozen=True)
class KubeflowTrainerArgs:
    """How to install Kubeflow Trainer."""

    # Helm chart version (the Trainer release).
    version: str
    # Rewrite every Trainer and JobSet admission webhook to failurePolicy Ignore (needed on k3s).
    ignore_webhook_failures: bool


class KubeflowTrainer(pulumi.ComponentResource):
    """The Trainer Helm release and a readiness gate that TrainJobs wait for."""

    release: k8s.helm.v3.Release
    ready: pulumi.Resource

    def __init__(
        self,
        name: str,
        args: KubeflowTrainerArgs,
        *,
        kubeconfig: pulumi.Input[str],
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        """kubeconfig: the cluster's, for the readiness gate's kubectl."""
        super().__init__("trainstack:index:KubeflowTrainer", name, None, opts)
        # A Pulumi resource rather than Helm's create_namespace, so that `pulumi destroy` removes it.
        namespace = k8s.core.v1.Namespace(
            f"{name}-namespace",
            metadata={"name": TRAINER_NAMESPACE},
            opts=pulumi.ResourceOptions(parent=self),
        )
        # helm.v3.Release, not helm.v4.Chart: a v4 Chart renders at preview through a provider whose
        # kubeconfig is still unknown when this stack creates the cluster, and fails
        # (pulumi/pulumi-kubernetes#3027, open). The webhook patch therefore cannot be a Pulumi transform
        # (a Release's objects are not Pulumi resources); it is the Release's Helm post-renderer, which
        # the provider runs both when it renders the chart for a diff and when it installs it.
        self.release = k8s.helm.v3.Release(
            name,
            name="kubeflow-trainer",
            chart=TRAINER_CHART,
            version=args.version,
            namespace=TRAINER_NAMESPACE,
            values={"runtimes": {"defaultEnabled": True}},
            postrender=str(K3S_WEBHOOK_POSTRENDER) if args.ignore_webhook_failures else None,
            timeout=600,
            opts=pulumi.ResourceOptions(parent=self, depends_on=[namespace]),
        )
        self.ready = kubectl_command(
            f"{name}-ready",
            kubeconfig=kubeconfig,
            script=READINESS_SCRIPT,
            triggers=[self.release.version],
            opts=pulumi.ResourceOptions(parent=self, depends_on=[self.release]),
        )
        self.register_outputs({"status": self.release.status})
