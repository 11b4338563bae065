"""trainstack: a cluster, the GPU Operator, Kubeflow Trainer, access, the trainer image and a TrainJob.

Reads the stack's config (validated before anything is declared) and composes the components.
"""

import pulumi

from components.access import Access
from components.cluster import Cluster
from components.gpu_operator import GpuOperator
from components.kubeflow_trainer import KubeflowTrainer
from components.mlflow_server import MlflowServer
from components.monitoring import TrainingMonitoring
from components.settings import load_settings
from components.trainer_image import PrePull, TrainerImage
from components.training_job import TrainingJob

settings = load_settings()

cluster = Cluster("cluster", settings.cluster)
on_cluster = pulumi.ResourceOptions(providers=[cluster.provider])

gpu_operator = (
    GpuOperator("gpu-operator", settings.gpu_operator, on_cluster) if settings.gpu_operator else None
)
trainer = KubeflowTrainer(
    "kubeflow-trainer", settings.trainer, kubeconfig=cluster.kubeconfig, opts=on_cluster
)
access = Access("access", settings.access, on_cluster)
# The build waits for nothing (it needs no cluster); the delivery into the nodes waits for the cluster and
# runs beside the Trainer and GPU Operator installs: a pushed image is pre-pulled on every node.
image = TrainerImage(
    "trainer-image",
    settings.image,
    cluster_identity=cluster.identity,
    deliver_after=[cluster],
    prepull=PrePull(
        namespace=access.namespace,
        image_pull_secret=access.image_pull_secret,
        provider=cluster.provider,
        job_name=settings.job.job_name,
        gpu_nodes=bool(settings.job.gpus_per_node),
    ),
)

# Optional: a tracking server the job logs to (it must answer before the job starts).
mlflow = (
    MlflowServer(
        "mlflow",
        settings.mlflow_server,
        image=image.reference,
        image_pull_secret=access.image_pull_secret,
        start_after=[access, image],
        opts=on_cluster,
    )
    if settings.mlflow_server
    else None
)

job = TrainingJob(
    "training",
    settings.job,
    namespace=access.namespace,
    service_account=access.service_account,
    image=image.reference,
    hf_token_secret=access.hf_token_secret,
    image_pull_secret=access.image_pull_secret,
    kubeconfig=cluster.kubeconfig,
    start_after=[
        trainer,
        image,
        *([gpu_operator] if gpu_operator else []),
        *(mlflow.ready if mlflow else []),
    ],
    runtime_class=gpu_operator.runtime_class if gpu_operator else None,
    opts=on_cluster,
)
if settings.monitoring:
    TrainingMonitoring(
        "monitoring",
        settings.monitoring,
        pulumi.ResourceOptions(providers=[cluster.provider], depends_on=[access]),
    )

pulumi.export("kubeconfig", cluster.kubeconfig)
pulumi.export("clusterName", settings.cluster.name)
pulumi.export("namespace", access.namespace)
pulumi.export("trainJobName", job.job_name)
pulumi.export("podNames", job.pod_names)
pulumi.export("checkpointLocation", job.checkpoint_location)
pulumi.export("image", image.pinned)
pulumi.export("logsCommand", job.logs_command)
