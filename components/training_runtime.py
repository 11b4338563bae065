"""The TrainingRuntime the TrainJob runs on: its pods' security and its failure policy (a runtime of the
stack's own, as TrainJob.runtimePatches cannot set JobSet's failurePolicy)."""

from __future__ import annotations

from typing import Any, Protocol

import pulumi

from trainer import PREEMPTED_EXIT_CODE, USAGE_EXIT_CODE

RUNTIME_NAME = "trainstack-torch"
# The torch runtime's replicated job and container, which Trainer fills from TrainJob.spec.trainer.
NODE = "node"
ANCESTOR_LABEL = "trainer.kubeflow.org/trainjob-ancestor-step"
SHM_MOUNT = "/dev/shm"
METRICS_PORT_NAME = "metrics"
TRAINER_UID = 1000
GPU_TOLERATIONS = [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
# upstream: kubernetes/api batch/v1 types.go JobReasonPodFailurePolicy @ v0.33.0
POD_FAILURE_POLICY_REASON = "PodFailurePolicy"


class RuntimeArgs(Protocol):
    """What the runtime takes from TrainingJobArgs."""

    @property
    def shm_size(self) -> str: ...
    @property
    def max_restarts(self) -> int: ...
    @property
    def metrics_port(self) -> int: ...
    @property
    def priority_class(self) -> str: ...


def usage_failure_pattern() -> str:
    """The Job failure message of the FailJob rule on USAGE_EXIT_CODE (the space keeps 75 and 20 apart).
    upstream: kubernetes/kubernetes pkg/controller/job/pod_failure_policy.go matchPodFailurePolicy @ v1.33.0
    upstream: kubernetes-sigs/jobset pkg/controllers/failure_policy.go findJobFailureCondition @ v0.12.0
    """
    return f"^Container {NODE} for pod [^ ]+ failed with exit code {USAGE_EXIT_CODE} matching FailJob rule "


def training_runtime_spec(
    args: RuntimeArgs, image: pulumi.Input[str], runtime_class: str | None = None
) -> dict[str, Any]:
    """A pod failure fails its Job at once, so the JobSet restarts together from the shared checkpoint;
    USAGE_EXIT_CODE fails the JobSet. It states what JobSet's webhook would default (k3s may skip it).
    upstream: kubernetes-sigs/jobset pkg/webhooks/jobset_webhook.go Default @ v0.12.0"""

    def fail_job_on(code: int) -> dict[str, Any]:
        return {
            "action": "FailJob",
            "onExitCodes": {"containerName": NODE, "operator": "In", "values": [code]},
        }

    pod_security = {
        "runAsNonRoot": True,
        "runAsUser": TRAINER_UID,
        "runAsGroup": TRAINER_UID,
        "fsGroup": TRAINER_UID,
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    container_security = {
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
        "runAsNonRoot": True,
    }
    node_job: dict[str, Any] = {
        "name": NODE,
        "template": {
            "metadata": {"labels": {ANCESTOR_LABEL: "trainer"}},
            "spec": {
                "completionMode": "Indexed",
                "backoffLimit": 0,
                "podFailurePolicy": {
                    "rules": [
                        # Evicted or preempted pods, and a trainer that saved and exited on SIGTERM.
                        {
                            "action": "FailJob",
                            "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}],
                        },
                        fail_job_on(PREEMPTED_EXIT_CODE),
                        # After the preemption rules, so a disrupted pod restarts whatever its exit code.
                        fail_job_on(USAGE_EXIT_CODE),
                    ]
                },
                "template": {
                    "spec": {
                        "restartPolicy": "Never",
                        **({"runtimeClassName": runtime_class} if runtime_class else {}),
                        **({"priorityClassName": args.priority_class} if args.priority_class else {}),
                        "securityContext": pod_security,
                        "containers": [
                            {
                                "name": NODE,
                                "image": image,
                                "securityContext": container_security,
                                "volumeMounts": [{"name": "dshm", "mountPath": SHM_MOUNT}],
                            }
                        ],
                        "volumes": [
                            {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": args.shm_size}}
                        ],
                    }
                },
            },
        },
    }
    pod_template = node_job["template"]["spec"]["template"]["spec"]
    if args.metrics_port:
        pod_template["containers"][0]["ports"] = [
            {"name": METRICS_PORT_NAME, "containerPort": args.metrics_port, "protocol": "TCP"}
        ]
    return {
        "mlPolicy": {"numNodes": 1, "torch": {}},
        "template": {
            "spec": {
                "successPolicy": {"operator": "All"},
                "network": {"enableDNSHostnames": True, "publishNotReadyAddresses": True},
                "failurePolicy": {
                    "maxRestarts": args.max_restarts,
                    "rules": [
                        {
                            "name": "usage",
                            "action": "FailJobSet",
                            "onJobFailureReasons": [POD_FAILURE_POLICY_REASON],
                            "onJobFailureMessagePatterns": [usage_failure_pattern()],
                        },
                        {
                            "name": "preemption",
                            "action": "RestartJobSetAndIgnoreMaxRestarts",
                            "onJobFailureReasons": [POD_FAILURE_POLICY_REASON],
                        },
                    ],
                },
                "replicatedJobs": [node_job],
            }
        },
    }
