"""The TrainingRuntime the TrainJob runs on: its pods' security and its failure policy.

JobSet's failurePolicy (restart everything when a node fails, at most max_restarts times, preemptions not
counted) is a runtime field TrainJob.runtimePatches cannot set, hence a runtime of the stack's own.
"""

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
# The GPU nodes' taint, tolerated by the training pods (and the image's pre-pull pods).
GPU_TOLERATIONS = [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
# upstream: kubernetes/api batch/v1 types.go JobReasonPodFailurePolicy @ v0.33.0
POD_FAILURE_POLICY_REASON = "PodFailurePolicy"


class RuntimeArgs(Protocol):
    """What the runtime takes from the job's Args (components.training_job.TrainingJobArgs)."""

    @property
    def shm_size(self) -> str: ...
    @property
    def max_restarts(self) -> int: ...
    @property
    def metrics_port(self) -> int: ...
    @property
    def priority_class(self) -> str: ...


def usage_failure_pattern() -> str:
    """The RE2 pattern of the Job failure message a FailJob rule on exit code USAGE_EXIT_CODE writes; JobSet's
    rule `usage` matches it. The space after the code keeps 75 and 20 from matching.

    upstream: kubernetes/kubernetes pkg/controller/job/pod_failure_policy.go matchPodFailurePolicy @ v1.33.0
    upstream: kubernetes-sigs/jobset pkg/controllers/failure_policy.go findJobFailureCondition @ v0.12.0
    """
    return f"^Container {NODE} for pod [^ ]+ failed with exit code {USAGE_EXIT_CODE} matching FailJob rule "


def training_runtime_spec(
    args: RuntimeArgs, image: pulumi.Input[str], runtime_class: str | None = None
) -> dict[str, Any]:
    """A torch TrainingRuntime. Each pod failure fails its Job at once (backoffLimit 0, restartPolicy Never)
    so the JobSet restarts together and every rank resumes from the shared checkpoint; a pod that exits
    USAGE_EXIT_CODE fails the JobSet (every restart would fail the same way). Pods run as TRAINER_UID without
    privilege escalation, with an in-memory /dev/shm; runtime_class: the RuntimeClass they name (or none).

    It also states what JobSet's mutating webhook would default (Indexed Jobs, DNS hostnames published before
    ready, a success policy), as on k3s that webhook may be skipped and the controller needs them.
    upstream: kubernetes-sigs/jobset pkg/webhooks/jobset_webhook.go Default @ v0.12.0
    """
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
                        {
                            "action": "FailJob",
                            "onExitCodes": {
                                "containerName": NODE,
                                "operator": "In",
                                "values": [PREEMPTED_EXIT_CODE],
                            },
                        },
                        # Bad config or environment: the JobSet rule "usage" fails the whole JobSet on it. After
                        # the preemption rules, so that a disrupted pod restarts whatever its exit code.
                        {
                            "action": "FailJob",
                            "onExitCodes": {
                                "containerName": NODE,
                                "operator": "In",
                                "values": [USAGE_EXIT_CODE],
                            },
                        },
                    ]
                },
                "template": {
                    "spec": {
                        "restartPolicy": "Never",
                        **({"runtimeClassName": runtime_class} if runtime_class else {}),
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
    if args.priority_class:
        pod_template["priorityClassName"] = args.priority_class
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
