"""The training job: checkpoint claim, training config, the TrainingRuntime and the TrainJob that runs on it."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

import pulumi
import pulumi_kubernetes as k8s

from components.checkpoints import (
    CHECKPOINT_MOUNT,
    ObjectStore,
    torchrun_shutdown_timeout,
    train_job_delete_timeout_seconds,
)
from components.shell import KubeconfigFile, kubectl_command, script
from components.training_runtime import GPU_TOLERATIONS, NODE, RUNTIME_NAME, training_runtime_spec
from trainer import SHUTDOWN_TIMEOUT_ENV

TRAINER_API_VERSION = "trainer.kubeflow.org/v1alpha1"
CONFIG_DIR = "/etc/trainstack"
CONFIG_FILE = "train.yaml"
# Hugging Face's caches on the checkpoint volume: kept across restarts and jobs, shared by the nodes.
HF_HOME = f"{CHECKPOINT_MOUNT}/huggingface"
TRAINER_COMMAND = ["python", "-m", "trainer"]
TRAINER_ARGS = ["launch", "--config", f"{CONFIG_DIR}/{CONFIG_FILE}"]
RUNTIME_PATCH_MANAGER = "trainstack.dev/pulumi"
JOBSET_NAME_LABEL = "jobset.sigs.k8s.io/jobset-name"
# The class of the stack's own shared checkpoint volume (no provisioner: the volume is declared, pre-bound).
SHARED_STORAGE_CLASS = "trainstack-shared"
# Trainer makes this index PET_NODE_RANK: index 0 holds rank 0.
# upstream: kubeflow/trainer pkg/runtime/framework/plugins/torch/torch.go @ v2.3.0
COMPLETION_INDEX_LABEL = "batch.kubernetes.io/job-completion-index"
PREEMPTION_POLICIES = ("PreemptLowerPriority", "Never")


def rank0_labels(job_name: str) -> dict[str, str]:
    """The job's node-rank-0 pod, whose rank 0 serves /metrics."""
    return {JOBSET_NAME_LABEL: job_name, COMPLETION_INDEX_LABEL: "0"}


@dataclass(frozen=True)
class PriorityClassSpec:
    """A PriorityClass the stack creates for the training pods."""

    value: int
    preemption_policy: str = "PreemptLowerPriority"  # Never: queue ahead of lower priorities, evict none


def config_map_name(job_name: str, train_config: str) -> str:
    """Content-addressed: a new config is a new ConfigMap, so the TrainJob is replaced."""
    return f"{job_name}-config-{hashlib.sha256(train_config.encode()).hexdigest()[:10]}"


@dataclass(frozen=True)
class TrainingJobArgs:
    """The TrainJob and what it runs with: one pod per node, on distinct Kubernetes nodes."""

    job_name: str
    num_nodes: int
    gpus_per_node: int  # 0 trains on CPU, one process per node
    cpu_per_node: str
    memory_per_node: str  # request and limit
    shm_size: str
    max_restarts: int  # JobSet restarts after failures (preemptions do not count)
    checkpoint_size: str
    checkpoint_storage_class: str  # empty: the cluster default (or the shared volume)
    checkpoint_access_mode: str  # one of CHECKPOINT_ACCESS_MODES
    train_config: str  # the resolved training config (YAML)
    pod_names_timeout_seconds: int  # for the pods to exist and the claim to bind
    termination_grace_period_seconds: int
    shared_storage_path: str = ""  # the cluster's shared directory, claimed through a volume; "": none
    metrics_port: int = 0  # rank 0's /metrics; 0: none
    priority_class: str = ""  # empty: the cluster's default priority
    priority: PriorityClassSpec | None = None  # create the class; None: it exists already
    object_store: ObjectStore | None = None  # checkpoints there rather than on the claim

    @property
    def config_map(self) -> str:
        return config_map_name(self.job_name, self.train_config)

    @property
    def checkpoint_claim(self) -> str:
        return f"{self.job_name}-checkpoints"

    @property
    def shared_volume(self) -> str:
        return f"trainstack-{self.job_name}-checkpoints"


def train_job_spec(
    args: TrainingJobArgs,
    *,
    image: pulumi.Input[str],
    service_account: pulumi.Input[str],
    hf_token_secret: pulumi.Input[str] | None,
    hf_token_key: str,
    image_pull_secret: pulumi.Input[str] | None,
) -> dict[str, Any]:
    """Trainer settings, plus runtimePatches for identity, volumes and placement."""
    env: list[dict[str, Any]] = [
        {"name": "DS_ACCELERATOR", "value": "cuda" if args.gpus_per_node else "cpu"},
        # torchrun's SIGTERM -> SIGKILL wait (its --shutdown-timeout), inside the pod's grace.
        {
            "name": SHUTDOWN_TIMEOUT_ENV,
            "value": str(torchrun_shutdown_timeout(args.termination_grace_period_seconds)),
        },
        {"name": "HF_HOME", "value": HF_HOME},
    ]
    if args.object_store is not None:
        env += args.object_store.environment()
    if hf_token_secret is not None:
        token = {"secretKeyRef": {"name": hf_token_secret, "key": hf_token_key}}
        env.append({"name": "HF_TOKEN", "valueFrom": token})
    requests: dict[str, Any] = {"cpu": args.cpu_per_node, "memory": args.memory_per_node}
    limits: dict[str, Any] = {"memory": args.memory_per_node}
    if args.gpus_per_node:
        requests["nvidia.com/gpu"] = limits["nvidia.com/gpu"] = args.gpus_per_node
    else:
        # The Kubeflow SDK (0.5.0) reads a node's device from its limits and fails on a container naming none.
        limits["cpu"] = args.cpu_per_node
    pod: dict[str, Any] = {
        "serviceAccountName": service_account,
        # Time for a preempted pod to finish its step and save.
        "terminationGracePeriodSeconds": args.termination_grace_period_seconds,
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
    patch = {"replicatedJobs": [{"name": NODE, "template": {"spec": {"template": {"spec": pod}}}}]}
    return {
        "runtimeRef": {"apiGroup": "trainer.kubeflow.org", "kind": "TrainingRuntime", "name": RUNTIME_NAME},
        "trainer": {
            "image": image,
            "command": TRAINER_COMMAND,
            "args": TRAINER_ARGS,
            "env": env,
            "numNodes": args.num_nodes,
            "numProcPerNode": max(args.gpus_per_node, 1),  # one process per GPU, or one on CPU
            "resourcesPerNode": {"requests": requests, "limits": limits},
        },
        "runtimePatches": [
            {"manager": RUNTIME_PATCH_MANAGER, "trainingRuntimeSpec": {"template": {"spec": patch}}}
        ],
    }


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
        hf_token_key: str,
        image_pull_secret: pulumi.Input[str] | None,
        kubeconfig: pulumi.Input[str] | KubeconfigFile,
        start_after: list[pulumi.Resource],
        runtime_class: str | None = None,
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        """start_after: what must be ready before the TrainJob (Trainer, image, MLflow server);
        runtime_class: the one the training pods name (the GPU Operator's), None for none."""
        super().__init__("trainstack:index:TrainingJob", name, None, opts)
        access_modes = [args.checkpoint_access_mode]
        claim_dependencies: list[pulumi.Resource] = []
        runtime_dependencies: list[pulumi.Resource] = []
        if args.priority is not None:
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
        if args.shared_storage_path:
            # The same directory on every node: a hostPath volume is shared storage, pre-bound to the claim.
            volume = k8s.core.v1.PersistentVolume(
                f"{name}-shared-volume",
                metadata={"name": args.shared_volume},
                spec={
                    "access_modes": access_modes,
                    "capacity": {"storage": args.checkpoint_size},
                    "storage_class_name": SHARED_STORAGE_CLASS,
                    "persistent_volume_reclaim_policy": "Retain",
                    "host_path": {"path": args.shared_storage_path, "type": "Directory"},
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
                # WaitForFirstConsumer classes bind with the first pod; the pod list fails `up` if it never does.
                "annotations": {"pulumi.com/skipAwait": "true"},
            },
            spec={
                "access_modes": access_modes,
                "resources": {"requests": {"storage": args.checkpoint_size}},
                "storage_class_name": SHARED_STORAGE_CLASS
                if args.shared_storage_path
                else args.checkpoint_storage_class or None,
                "volume_name": args.shared_volume if args.shared_storage_path else None,
            },
            # destroy: deleted before the Trainer, waiting out the pods the GC removes only while its CRDs exist
            opts=pulumi.ResourceOptions(parent=self, depends_on=[*claim_dependencies, *start_after]),
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
                hf_token_key=hf_token_key,
                image_pull_secret=image_pull_secret,
            ),
            # The spec is immutable once running: a new image or config replaces the job, which resumes from
            # the checkpoints on the claim (same name, same directory).
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
