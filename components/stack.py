"""The stack's config as each component's Args, all checked before __main__.py declares anything: where
one component's Args take from another's. Apart from __main__.py so check_stack and tests can use it."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import pulumi

from components import (
    access,
    cluster_config,
    gpu_operator,
    kubeflow_trainer,
    mlflow_server,
    monitoring,
    settings,
    trainer_image,
    training_job,
    training_job_config,
    training_runtime,
)
from components.cluster.existing import ask_api
from components.cluster.k3s_docker import DOCKER_CLUSTER_LABEL
from components.cluster.kubeconfig import check_api_server, read_custom_resource_definition
from components.cluster.provider import SHARED_STORAGE_PATH, ClusterArgs


@dataclass(frozen=True)
class StackSettings:
    """Everything the program declares, as the components' Args."""

    cluster: ClusterArgs
    gpu: gpu_operator.GpuSetup | None  # None on a CPU-only stack
    trainer: kubeflow_trainer.KubeflowTrainerArgs
    access: access.AccessArgs
    image: trainer_image.TrainerImageArgs
    job: training_job.TrainingJobArgs
    monitoring: monitoring.MonitoringArgs | None = None  # None when metricsPort is 0
    mlflow_server: mlflow_server.MlflowServerArgs | None = None  # None unless mlflowServer is true


def unpushed_delivery(cluster: ClusterArgs) -> trainer_image.Delivery | None:
    """None: an existing cluster only pulls."""
    if cluster.kind == "kind":
        return trainer_image.KindLoad(cluster.name)
    if cluster.docker is not None:
        return trainer_image.DockerNodesImport(cluster.name, DOCKER_CLUSTER_LABEL)
    return trainer_image.K3sImport(cluster.remote) if cluster.existing is None else None


def parse_settings(
    stack_values: Mapping[str, Any],
    *,
    hf_token: pulumi.Input[str] | None = None,
    registry_password: pulumi.Input[str] | None = None,
    kubeconfig: str | None = None,
    stack: str = "",
    ask_api_server: bool = True,
) -> StackSettings:
    """stack_values: keys without the project prefix. kubeconfig: the secret's plaintext, whose API server is
    asked last (unless ask_api_server is False: check_stack). stack: gpu_operator.OWNER_LABEL's value."""
    values = settings.resolve_values(stack_values)
    cluster = cluster_config.cluster_args(values, kubeconfig)
    gpus = cluster.gpus_per_node
    namespace = access.namespace(values)
    gpu = gpu_operator.gpu_operator_args(values, cluster_kind=cluster.kind, gpus_per_node=gpus, owner=stack)
    registry = access.registry_credentials(values, registry_password)
    delivery = unpushed_delivery(cluster)
    image = trainer_image.image_args(values, registry=registry, gpus_per_node=gpus, delivery=delivery)
    # Training keys other components set: (value, the stack key it comes from).
    stack_keys: dict[str, tuple[str, str]] = {}
    port = monitoring.metrics_port(values)
    mlflow = mlflow_server.mlflow_args(values, namespace)
    if mlflow is not None:
        stack_keys["output.tracking"] = ("mlflow", "mlflowServer")
        stack_keys["output.tracking_uri"] = (mlflow_server.tracking_uri(namespace), "mlflowServer")
    job = training_job_config.job_args(
        values,
        node_count=cluster.node_count,
        gpus_per_node=gpus,
        shared_storage_path=SHARED_STORAGE_PATH if cluster.shared_storage else "",
        metrics_port=port,
        stack_keys=stack_keys,
    )
    rank0 = training_job.rank0_labels(job.job_name)
    metrics = monitoring.monitoring_args(
        values, port, namespace=namespace, job_name=job.job_name, rank0_labels=rank0
    )
    trainer = kubeflow_trainer.trainer_args(values, on_k3s=cluster.kind == "k3s")
    existing = cluster.existing if ask_api_server else None
    if existing is not None:
        cluster_config.asked(check_api_server, existing)
        crd = cluster_config.asked(read_custom_resource_definition, existing, kubeflow_trainer.JOBSET_CRD)
        runtime = training_runtime.training_runtime_spec(job, "image")["template"]["spec"]
        kubeflow_trainer.check_jobset_crd(crd, runtime, existing.source_key)
    gpu_setup = None
    if gpu is not None:
        answers = cluster_config.asked(ask_api, existing, gpu_operator.INVENTORY_PATHS) if existing else None
        inventory = gpu_operator.inventory_from_api(answers) if answers else None
        undecided = cluster.existing is not None and not ask_api_server
        gpu_setup = gpu_operator.checked_gpu_setup(*gpu, inventory, decided_by_up=undecided)
    access_args = access.AccessArgs(
        namespace, access.TRAINING_SERVICE_ACCOUNT, job.config_map, hf_token, registry
    )
    return StackSettings(cluster, gpu_setup, trainer, access_args, image, job, metrics, mlflow)


def load_settings() -> StackSettings:
    config = pulumi.Config(settings.PROJECT)
    raw = settings.stack_values()
    kubeconfig = raw.get("kubeconfig")
    if kubeconfig is not None and not settings.is_secret("kubeconfig"):
        raise settings.error("kubeconfig", settings.KUBECONFIG_NOT_SECRET)
    return parse_settings(
        {key: value for key, value in raw.items() if key not in settings.SECRET_KEYS},
        hf_token=config.get_secret("hfToken"),
        registry_password=config.get_secret("registryPassword"),
        kubeconfig=kubeconfig,
        stack=settings.label_value(f"{pulumi.get_project()}.{pulumi.get_stack()}"),
    )
