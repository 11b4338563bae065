"""The training job: checkpoint claim, training config, a TrainingRuntime and the TrainJob that runs on it."""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from typing import Any

import pulumi
import pulumi_kubernetes as k8s

from components.access import HF_TOKEN_KEY
from components.cluster import SHARED_STORAGE_PATH
from components.shell import KubeconfigFile, kubectl_command, script
from trainer import PREEMPTED_EXIT_CODE, SHUTDOWN_TIMEOUT_ENV, USAGE_EXIT_CODE

TRAINER_API_VERSION = "trainer.kubeflow.org/v1alpha1"
# Where the contract puts things inside a training pod.
CONFIG_DIR = "/etc/trainstack"
CONFIG_FILE = "train.yaml"
CHECKPOINT_MOUNT = "/mnt/checkpoints"
# Hugging Face's caches (hub downloads, datasets' Arrow files) on the checkpoint volume, not in the container's
# writable layer under HOME: kept across pod restarts and jobs, one copy for the nodes that share the volume,
# never counted against a node's ephemeral storage.
HF_HOME = f"{CHECKPOINT_MOUNT}/huggingface"
SHM_MOUNT = "/dev/shm"
TRAINER_UID = 1000
# The GPU nodes' taint, tolerated by the training pods (and the image's pre-pull pods).
GPU_TOLERATIONS = [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
TRAINER_COMMAND = ["python", "-m", "trainer"]
TRAINER_ARGS = ["launch", "--config", f"{CONFIG_DIR}/{CONFIG_FILE}"]
# The torch runtime's replicated job and container, which Trainer fills from TrainJob.spec.trainer.
NODE = "node"
RUNTIME_NAME = "trainstack-torch"
RUNTIME_PATCH_MANAGER = "trainstack.dev/pulumi"
JOBSET_NAME_LABEL = "jobset.sigs.k8s.io/jobset-name"
ANCESTOR_LABEL = "trainer.kubeflow.org/trainjob-ancestor-step"
# The class of the stack's own shared checkpoint volume (no provisioner: the volume is declared, pre-bound).
SHARED_STORAGE_CLASS = "trainstack-shared"
# The checkpoint claim's access modes (Kubernetes' names); ReadWriteMany lets several nodes mount it.
CHECKPOINT_ACCESS_MODES = ("ReadWriteMany", "ReadWriteOnce")
# Indexed Jobs label each pod with its completion index (Kubernetes >= 1.28); Trainer's torch plugin makes that
# index PET_NODE_RANK (pkg/runtime/framework/plugins/torch/torch.go, v2.3.0), so index 0 holds global rank 0.
COMPLETION_INDEX_LABEL = "batch.kubernetes.io/job-completion-index"
METRICS_PORT_NAME = "metrics"
PREEMPTION_POLICIES = ("PreemptLowerPriority", "Never")

# The termination grace period derived from the model size (terminationGracePeriodSeconds 0). A preempted
# pod finishes its step, saves a checkpoint and exits 75 within it, or Kubernetes SIGKILLs it and the work
# since the previous checkpoint is lost. Measured on an NVIDIA H200 host on 2026-11-30 (docs/benchmarks.md):
# GPT-2 124M saved in 3.4-4.7 s with its AdamW state, at most 2.7 s per GB written, checksummed and published.
SAVE_SECONDS_PER_GB = 2.7
# Checkpoint bytes per parameter at most: ZeRO >= 1 with bf16 keeps bf16 weights (2) beside fp32 master weights
# and two fp32 AdamW moments (12); ZeRO 0 keeps the 12 alone.
CHECKPOINT_BYTES_PER_PARAMETER = 14
# A stop may wait for a background checkpoint write in flight before its own save.
SAVES_PER_STOP = 2
# Volumes slower than that host's local disk (network file systems, shared claims).
VOLUME_SLOWDOWN = 3
# The step in flight, the stop agreed by every rank, process groups torn down, torchrun and launch exiting.
GRACE_FLOOR_SECONDS = 60
# torchrun SIGKILLs its workers this long before Kubernetes would SIGKILL the pod, so that `launch` still
# collects the workers' exit codes and exits with the right one.
SHUTDOWN_MARGIN_SECONDS = 10
MIN_GRACE_PERIOD_SECONDS = 2 * SHUTDOWN_MARGIN_SECONDS


def default_grace_period_seconds(parameters: int) -> int:
    """The termination grace period for a model of this many parameters, in whole seconds rounded up:
    GRACE_FLOOR_SECONDS + SAVES_PER_STOP x VOLUME_SLOWDOWN x SAVE_SECONDS_PER_GB x its checkpoint's GB
    (CHECKPOINT_BYTES_PER_PARAMETER bytes per parameter). GPT-2 124M: 89 s; GPT-2 1.5B: 414 s."""
    gigabytes = parameters * CHECKPOINT_BYTES_PER_PARAMETER / 1e9
    return math.ceil(GRACE_FLOOR_SECONDS + SAVES_PER_STOP * VOLUME_SLOWDOWN * SAVE_SECONDS_PER_GB * gigabytes)


# A TrainJob's delete waits, in the foreground (pulumi-kubernetes' default propagation), for its JobSet, Jobs and
# every pod, each given terminationGracePeriodSeconds to save; pulumi-kubernetes gives a delete 10 minutes unless
# the resource's customTimeouts say otherwise (docs: pulumi-kubernetes customTimeouts). The delete (and the
# delete half of a replacement) gets the grace period plus this much for the API server, the garbage collector
# and the kubelets to act, and never less than the provider's own 10 minutes.
PROVIDER_DELETE_TIMEOUT_SECONDS = 600
DELETE_MARGIN_SECONDS = 300


def train_job_delete_timeout_seconds(grace_period_seconds: int) -> int:
    """How long `pulumi destroy` or a replacement waits for a TrainJob's pods to save and go."""
    return max(PROVIDER_DELETE_TIMEOUT_SECONDS, grace_period_seconds + DELETE_MARGIN_SECONDS)


def torchrun_shutdown_timeout(grace_period_seconds: int) -> int:
    """torchrun's wait between its SIGTERM to the workers and its SIGKILL, matching the pod's grace period."""
    return grace_period_seconds - SHUTDOWN_MARGIN_SECONDS


# The reason of a Job's Failed condition when a pod matched a FailJob rule of its podFailurePolicy
# (k8s.io/api batch/v1 JobReasonPodFailurePolicy, Kubernetes 1.33).
POD_FAILURE_POLICY_REASON = "PodFailurePolicy"


def usage_failure_pattern() -> str:
    """The RE2 pattern of the Job failure message that a FailJob rule on exit code USAGE_EXIT_CODE of the
    `node` container writes; JobSet's failurePolicy rule `usage` matches it with onJobFailureMessagePatterns.

    Kubernetes 1.33 (pkg/controller/job/pod_failure_policy.go, matchPodFailurePolicy) formats that message as
    "Container %s for pod %s/%s failed with exit code %v matching %v rule at index %d" and copies it, with the
    reason PodFailurePolicy, from the Job's FailureTarget condition to its Failed condition
    (job_controller.go, newFailedConditionForFailureTarget), which is the condition JobSet v0.12.0 reads
    (pkg/controllers/failure_policy.go, findJobFailureCondition). The space after the code keeps 75 and 20
    from matching; a pod failed on its DisruptionTarget condition gets "Pod %s/%s has condition ..." instead.
    """
    return f"^Container {NODE} for pod [^ ]+ failed with exit code {USAGE_EXIT_CODE} matching FailJob rule "


def job_paths(job_name: str, checkpoint_url: str = "") -> dict[str, str]:
    """The training config's storage keys under the job's own directory on the checkpoint volume; with
    checkpoint_url (s3://bucket/prefix) the checkpoints go to <prefix>/<job>/checkpoints in that object store
    instead, and the volume keeps the outputs and the token shards. The shards are shared by every job on
    the volume (trainer.prepare keys them by source and encoding: a second job reuses them)."""
    root = f"{CHECKPOINT_MOUNT}/{job_name}"
    checkpoints = f"{checkpoint_url.rstrip('/')}/{job_name}" if checkpoint_url else root
    return {
        "checkpoint.dir": f"{checkpoints}/checkpoints",
        "output.dir": f"{root}/output",
        "data.cache_dir": f"{CHECKPOINT_MOUNT}/tokens",
    }


def rank0_labels(job_name: str) -> dict[str, str]:
    """Labels that select the job's node-rank-0 pod, the one whose rank 0 serves /metrics."""
    return {JOBSET_NAME_LABEL: job_name, COMPLETION_INDEX_LABEL: "0"}


@dataclass(frozen=True)
class PriorityClassSpec:
    """A PriorityClass the stack creates for the training pods."""

    # Priority of the pods: higher schedules first and may preempt lower (user classes: <= 1,000,000,000).
    value: int
    # PreemptLowerPriority, or Never (queue ahead of lower priorities without evicting them).
    preemption_policy: str = "PreemptLowerPriority"


# The AWS SDK's variables the trainer's S3 client (boto3) reads; the Secret's keys have the same names.
S3_SECRET_KEYS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")
S3_OPTIONAL_SECRET_KEYS = ("AWS_SESSION_TOKEN",)


@dataclass(frozen=True)
class ObjectStore:
    """Checkpoints in an S3-compatible object store (trainer.s3_storage) rather than on the claim."""

    # checkpoint.dir of the job: s3://bucket/prefix/<job>/checkpoints.
    url: str
    # Secret in the namespace with S3_SECRET_KEYS (and optionally S3_OPTIONAL_SECRET_KEYS).
    secret: str
    # Endpoint URL of a store other than Amazon S3 (AWS_ENDPOINT_URL_S3); empty: Amazon S3.
    endpoint: str
    # Region the requests are signed for (AWS_REGION).
    region: str

    def environment(self) -> list[dict[str, Any]]:
        """The training container's variables: the credentials by secretKeyRef (never a literal), the
        endpoint and region as values."""
        env: list[dict[str, Any]] = [
            {"name": key, "valueFrom": {"secretKeyRef": {"name": self.secret, "key": key}}}
            for key in S3_SECRET_KEYS
        ]
        env += [
            {"name": key, "valueFrom": {"secretKeyRef": {"name": self.secret, "key": key, "optional": True}}}
            for key in S3_OPTIONAL_SECRET_KEYS
        ]
        if self.endpoint:
            env.append({"name": "AWS_ENDPOINT_URL_S3", "value": self.endpoint})
        env.append({"name": "AWS_REGION", "value": self.region})
        return env


def config_map_name(job_name: str, train_config: str) -> str:
    """A content-addressed ConfigMap name: a new config is a new ConfigMap, so the TrainJob is replaced."""
    return f"{job_name}-config-{hashlib.sha256(train_config.encode()).hexdigest()[:10]}"


@dataclass(frozen=True)
class TrainingJobArgs:
    """The TrainJob and what it runs with."""

    # Name of the TrainJob, and of the JobSet and pods Trainer creates for it.
    job_name: str
    # Training nodes: one pod per node, spread over distinct Kubernetes nodes.
    num_nodes: int
    # GPUs per node (nvidia.com/gpu); 0 trains on CPU with one process per node.
    gpus_per_node: int
    # CPU request per node.
    cpu_per_node: str
    # Memory request and limit per node.
    memory_per_node: str
    # Size of the in-memory /dev/shm.
    shm_size: str
    # JobSet restarts after failures before the job fails (preemptions do not count).
    max_restarts: int
    # Size of the checkpoint claim (with object_store it holds the outputs and the token cache only).
    checkpoint_size: str
    # StorageClass of the checkpoint claim; empty means the cluster default (or the shared volume).
    checkpoint_storage_class: str
    # Access mode of the checkpoint claim and its shared volume: one of CHECKPOINT_ACCESS_MODES
    # (ReadWriteMany whenever num_nodes > 1).
    checkpoint_access_mode: str
    # The resolved training config (YAML), mounted at /etc/trainstack/train.yaml.
    train_config: str
    # How long to wait for the job's pods to exist (podNames) and its checkpoint claim to bind.
    pod_names_timeout_seconds: int
    # Seconds from a pod's SIGTERM to its SIGKILL (>= MIN_GRACE_PERIOD_SECONDS); torchrun's own wait ends
    # SHUTDOWN_MARGIN_SECONDS earlier.
    termination_grace_period_seconds: int
    # Claim the cluster's shared directory (SHARED_STORAGE_PATH on every node) through a ReadWriteMany volume.
    shared_storage: bool = False
    # Port rank 0 serves Prometheus /metrics on (declared as the container port "metrics"); 0: none.
    metrics_port: int = 0
    # PriorityClass of the training pods; empty: the cluster's default priority.
    priority_class: str = ""
    # Create that PriorityClass with this spec; None: it exists already.
    priority: PriorityClassSpec | None = None
    # Checkpoints in an object store; None: on the claim.
    object_store: ObjectStore | None = None

    @property
    def config_map(self) -> str:
        """Name of the ConfigMap that carries the training config."""
        return config_map_name(self.job_name, self.train_config)

    @property
    def checkpoint_claim(self) -> str:
        """Name of the checkpoint PersistentVolumeClaim."""
        return f"{self.job_name}-checkpoints"

    @property
    def shared_volume(self) -> str:
        """Name of the PersistentVolume over the cluster's shared directory (cluster-scoped)."""
        return f"trainstack-{self.job_name}-checkpoints"

    @property
    def processes_per_node(self) -> int:
        """One process per GPU, or one on CPU."""
        return max(self.gpus_per_node, 1)


def training_runtime_spec(
    args: TrainingJobArgs, image: pulumi.Input[str], runtime_class: str | None = None
) -> dict[str, Any]:
    """A torch TrainingRuntime that the default torch-distributed one cannot express.

    JobSet's failurePolicy (restart everything when a node fails, at most max_restarts times, and without
    counting preemptions) is a runtime field that TrainJob.runtimePatches cannot set. Each pod failure fails
    its Job at once (backoffLimit 0, restartPolicy Never) so the whole JobSet restarts together and every
    rank resumes from the shared checkpoint. A pod that exits USAGE_EXIT_CODE (bad config or environment, or a
    resize the checkpoint cannot follow) fails the JobSet instead: every restart would fail the same way, each
    one counted against max_restarts. The pods run as uid 1000 without privilege escalation and get
    an in-memory /dev/shm for NCCL. runtime_class: the RuntimeClass the pods name (the GPU Operator's
    `nvidia`), rather than relying on containerd's default runtime; None names none.

    It also states what JobSet's mutating webhook would default (jobset v0.12.0, the release Trainer 2.3.0's
    chart installs: pkg/webhooks/jobset_webhook.go Default), because on k3s the stack sets that webhook's
    failurePolicy to Ignore, and a JobSet admitted without it lacks them: Indexed Jobs (the pods'
    batch.kubernetes.io/job-completion-index annotation is where Trainer's torch plugin takes PET_NODE_RANK
    from; without it every node's rank is empty), DNS hostnames for every pod published before it is ready
    (PET_MASTER_ADDR is <job>-node-0-0.<job>; the controller dereferences network without a nil check), and
    a success policy (also dereferenced unchecked). The pods' restartPolicy is already ours (Never); the
    deprecated startupPolicy is nil-safe in the controller and left out.
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


def train_job_spec(
    args: TrainingJobArgs,
    *,
    image: pulumi.Input[str],
    service_account: pulumi.Input[str],
    hf_token_secret: pulumi.Input[str] | None,
    image_pull_secret: pulumi.Input[str] | None,
) -> dict[str, Any]:
    """The TrainJob: trainer settings, plus runtimePatches for identity, volumes and placement."""
    env: list[dict[str, Any]] = [
        {"name": "DS_ACCELERATOR", "value": "cuda" if args.gpus_per_node else "cpu"},
        # torchrun's SIGTERM -> SIGKILL wait (torchrun reads it as its --shutdown-timeout), inside the pod's grace.
        {
            "name": SHUTDOWN_TIMEOUT_ENV,
            "value": str(torchrun_shutdown_timeout(args.termination_grace_period_seconds)),
        },
        {"name": "HF_HOME", "value": HF_HOME},
    ]
    if args.object_store is not None:
        env += args.object_store.environment()
    if hf_token_secret is not None:
        env.append(
            {
                "name": "HF_TOKEN",
                "valueFrom": {"secretKeyRef": {"name": hf_token_secret, "key": HF_TOKEN_KEY}},
            }
        )
    requests: dict[str, Any] = {"cpu": args.cpu_per_node, "memory": args.memory_per_node}
    limits: dict[str, Any] = {"memory": args.memory_per_node}
    if args.gpus_per_node:
        requests["nvidia.com/gpu"] = limits["nvidia.com/gpu"] = args.gpus_per_node
    else:
        # The Kubeflow SDK (kubeflow 0.5.0, TrainerClient) reads a node's device from its limits (a GPU, TPU,
        # NPU or cpu) and fails every list_jobs/get_job on a container that names none: a CPU node names cpu.
        limits["cpu"] = args.cpu_per_node

    pod: dict[str, Any] = {
        "serviceAccountName": service_account,
        # Time for a preempted pod to finish its step and save (part of the TrainJob: a change replaces it).
        "terminationGracePeriodSeconds": args.termination_grace_period_seconds,
        # One training pod per Kubernetes node.
        "affinity": {
            "podAntiAffinity": {
                "requiredDuringSchedulingIgnoredDuringExecution": [
                    {
                        "labelSelector": {"matchLabels": {JOBSET_NAME_LABEL: args.job_name}},
                        "topologyKey": "kubernetes.io/hostname",
                    }
                ]
            }
        },
        "volumes": [
            {"name": "checkpoints", "persistentVolumeClaim": {"claimName": args.checkpoint_claim}},
            {"name": "train-config", "configMap": {"name": args.config_map}},
        ],
        "containers": [
            {
                "name": NODE,
                "volumeMounts": [
                    {"name": "checkpoints", "mountPath": CHECKPOINT_MOUNT},
                    {"name": "train-config", "mountPath": CONFIG_DIR, "readOnly": True},
                ],
            }
        ],
    }
    if args.gpus_per_node:
        pod["tolerations"] = GPU_TOLERATIONS
    if image_pull_secret is not None:
        pod["imagePullSecrets"] = [{"name": image_pull_secret}]

    return {
        "runtimeRef": {"apiGroup": "trainer.kubeflow.org", "kind": "TrainingRuntime", "name": RUNTIME_NAME},
        "trainer": {
            "image": image,
            "command": TRAINER_COMMAND,
            "args": TRAINER_ARGS,
            "env": env,
            "numNodes": args.num_nodes,
            "numProcPerNode": args.processes_per_node,
            "resourcesPerNode": {"requests": requests, "limits": limits},
        },
        "runtimePatches": [
            {
                "manager": RUNTIME_PATCH_MANAGER,
                "trainingRuntimeSpec": {
                    "template": {
                        "spec": {
                            "replicatedJobs": [
                                {"name": NODE, "template": {"spec": {"template": {"spec": pod}}}}
                            ]
                        }
                    }
                },
            }
        ],
    }


# Lists the TrainJob's pods, waiting a bounded time for them and for the checkpoint claim: training_job_pods.sh.
POD_NAMES_SCRIPT = script("training_job_pods.sh")


class TrainingJob(pulumi.ComponentResource):
    """Checkpoint claim, config ConfigMap, TrainingRuntime, TrainJob, and the list of its pods."""

    job_name: pulumi.Output[str]
    pod_names: pulumi.Output[list[str]]
    checkpoint_location: pulumi.Output[str]
    logs_command: pulumi.Output[str]

    def __init__(
        self,
        name: str,
        args: TrainingJobArgs,
        *,
        namespace: pulumi.Input[str],
        service_account: pulumi.Input[str],
        image: pulumi.Input[str],
        hf_token_secret: pulumi.Input[str] | None,
        image_pull_secret: pulumi.Input[str] | None,
        kubeconfig: pulumi.Input[str] | KubeconfigFile,
        start_after: list[pulumi.Resource],
        runtime_class: str | None = None,
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        """namespace .. image_pull_secret: what Access and TrainerImage made; kubeconfig: for listing pods;
        start_after: what must be ready before the TrainJob is created (Trainer, GPU Operator, image);
        runtime_class: the RuntimeClass the training pods name (the GPU Operator's), None for none."""
        super().__init__("trainstack:index:TrainingJob", name, None, opts)
        access_modes = [args.checkpoint_access_mode]
        claim_dependencies: list[pulumi.Resource] = []
        runtime_dependencies: list[pulumi.Resource] = []
        if args.priority is not None:
            # Cluster-scoped: named after the job by default, so stacks sharing a cluster do not collide.
            priority = k8s.scheduling.v1.PriorityClass(
                f"{name}-priority",
                metadata={"name": args.priority_class},
                value=args.priority.value,
                preemption_policy=args.priority.preemption_policy,
                global_default=False,
                description=f"Training pods of the TrainJob {args.job_name} (trainstack).",
                opts=pulumi.ResourceOptions(parent=self),
            )
            runtime_dependencies.append(priority)
        if args.shared_storage:
            # The same directory on every node: a hostPath volume is shared storage here, pre-bound to the claim.
            volume = k8s.core.v1.PersistentVolume(
                f"{name}-shared-volume",
                metadata={"name": args.shared_volume},
                spec={
                    "access_modes": access_modes,
                    "capacity": {"storage": args.checkpoint_size},
                    "storage_class_name": SHARED_STORAGE_CLASS,
                    "persistent_volume_reclaim_policy": "Retain",
                    "host_path": {"path": SHARED_STORAGE_PATH, "type": "Directory"},
                    "claim_ref": {"namespace": namespace, "name": args.checkpoint_claim},
                },
                opts=pulumi.ResourceOptions(parent=self),
            )
            claim_dependencies.append(volume)
        claim = k8s.core.v1.PersistentVolumeClaim(
            f"{name}-checkpoints",
            metadata={
                "name": args.checkpoint_claim,
                "namespace": namespace,
                # Binding waits for the first pod on WaitForFirstConsumer classes (kind's, k3s's); the pod
                # list below fails `up` if the claim never binds.
                "annotations": {"pulumi.com/skipAwait": "true"},
            },
            spec={
                "access_modes": access_modes,
                "resources": {"requests": {"storage": args.checkpoint_size}},
                "storage_class_name": SHARED_STORAGE_CLASS
                if args.shared_storage
                else args.checkpoint_storage_class or None,
                "volume_name": args.shared_volume if args.shared_storage else None,
            },
            opts=pulumi.ResourceOptions(parent=self, depends_on=claim_dependencies),
        )
        config = k8s.core.v1.ConfigMap(
            f"{name}-config",
            metadata={"name": args.config_map, "namespace": namespace},
            data={CONFIG_FILE: args.train_config},
            opts=pulumi.ResourceOptions(parent=self),
        )
        runtime = k8s.apiextensions.CustomResource(
            f"{name}-runtime",
            api_version=TRAINER_API_VERSION,
            kind="TrainingRuntime",
            metadata={
                "name": RUNTIME_NAME,
                "namespace": namespace,
                "labels": {"trainer.kubeflow.org/framework": "torch"},
            },
            spec=training_runtime_spec(args, image, runtime_class),
            opts=pulumi.ResourceOptions(parent=self, depends_on=[*start_after, *runtime_dependencies]),
        )
        train_job = k8s.apiextensions.CustomResource(
            f"{name}-trainjob",
            api_version=TRAINER_API_VERSION,
            kind="TrainJob",
            metadata={"name": args.job_name, "namespace": namespace},
            spec=train_job_spec(
                args,
                image=image,
                service_account=service_account,
                hf_token_secret=hf_token_secret,
                image_pull_secret=image_pull_secret,
            ),
            # A TrainJob's spec is immutable once running: a new image or config replaces the job, which
            # resumes from the checkpoints on the claim (same name, same directory).
            opts=pulumi.ResourceOptions(
                parent=self,
                depends_on=[claim, config, runtime, *start_after],
                replace_on_changes=["spec"],
                delete_before_replace=True,
                custom_timeouts=pulumi.CustomTimeouts(
                    delete=f"{train_job_delete_timeout_seconds(args.termination_grace_period_seconds)}s"
                ),
            ),
        )
        selector = f"{JOBSET_NAME_LABEL}={args.job_name}"
        # A replaced TrainJob keeps its id (namespace/name) but gets a new uid: list the new job's pods.
        train_job_uid = train_job.metadata.apply(lambda meta: (meta or {}).get("uid", ""))  # type: ignore[attr-defined]
        pods = kubectl_command(
            f"{name}-pods",
            kubeconfig=kubeconfig,
            script=POD_NAMES_SCRIPT,
            environment={
                "NAMESPACE": namespace,
                "SELECTOR": selector,
                "WANT": str(args.num_nodes),
                "CLAIM": args.checkpoint_claim,
                "TIMEOUT": str(args.pod_names_timeout_seconds),
            },
            triggers=[train_job.id, train_job_uid, image],
            opts=pulumi.ResourceOptions(parent=self, depends_on=[train_job]),
        )
        # Pod names are not sensitive, though the command that lists them carries the kubeconfig.
        self.pod_names = pulumi.Output.unsecret(pods.stdout).apply(str.split)
        self.job_name = train_job.id.apply(lambda _: args.job_name)
        self.checkpoint_location = (
            pulumi.Output.from_input(args.object_store.url)
            if args.object_store is not None
            else pulumi.Output.format(
                "pvc://{0}/{1}/{2}/checkpoints", namespace, args.checkpoint_claim, args.job_name
            )
        )
        self.logs_command = pulumi.Output.format(
            "kubectl --kubeconfig <(pulumi stack output kubeconfig --show-secrets --stack {0}) logs -n {1} -l {2}"
            " --all-containers --prefix --follow --max-log-requests {3}",
            pulumi.get_stack(),
            namespace,
            selector,
            max(args.num_nodes, 5),
        )
        self.register_outputs(
            {
                "trainJobName": self.job_name,
                "podNames": self.pod_names,
                "checkpointLocation": self.checkpoint_location,
                "logsCommand": self.logs_command,
            }
        )
