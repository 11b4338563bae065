"""trainstack: a cluster, the GPU Operator, Kubeflow Trainer, access, the trainer image and a TrainJob,
composed here once components/stack.py has checked every component's Args."""

import pulumi

from components.access import HF_TOKEN_KEY, Access
from components.cluster import Cluster
from components.cluster.kubeconfig import with_namespace
from components.gpu_operator import GpuOperator
from components.kubeflow_trainer import KubeflowTrainer
from components.mlflow_server import MlflowServer
from components.monitoring import TrainingMonitoring
from components.stack import load_settings
from components.trainer_image import PrePull, TrainerImage
from components.training_job import TrainingJob
from components.training_runtime import GPU_TOLERATIONS, TRAINER_UID

settings = load_settings()
cluster = Cluster("cluster", settings.cluster)
gpu_operator = None
if settings.gpu:
    pulumi.log.info(settings.gpu.summary)
    if settings.gpu.operator:
        gpu_operator = GpuOperator(
            "gpu-operator",
            settings.gpu.operator,
            kubeconfig=cluster.kubeconfig,
            opts=pulumi.ResourceOptions(providers=[cluster.provider]),
        )


def _after(gates: list[pulumi.Resource]) -> pulumi.ResourceTransformation:
    """Every resource of a component waits for gates (a component's depends_on does not reach its children)."""

    def transform(args: pulumi.ResourceTransformationArgs) -> pulumi.ResourceTransformationResult:
        waits = pulumi.ResourceOptions(depends_on=gates)
        return pulumi.ResourceTransformationResult(args.props, pulumi.ResourceOptions.merge(args.opts, waits))

    return transform


# The toolkit restarts containerd (and k3s): all else on the cluster waits for it, and at destroy goes first.
gpu_gates: list[pulumi.Resource] = [gpu_operator.ready] if gpu_operator else []
on_cluster = pulumi.ResourceOptions(providers=[cluster.provider], transformations=[_after(gpu_gates)])
trainer = KubeflowTrainer(
    "kubeflow-trainer", settings.trainer, kubeconfig=cluster.kubectl_kubeconfig, opts=on_cluster
)
access = Access("access", settings.access, on_cluster)
# The build needs no cluster; the delivery waits for it and runs beside the Trainer and GPU Operator installs.
image = TrainerImage(
    "trainer-image",
    settings.image,
    cluster_identity=cluster.identity,
    deliver_after=[cluster, *gpu_gates],
    prepull=PrePull(
        namespace=access.namespace,
        image_pull_secret=access.image_pull_secret,
        provider=cluster.provider,
        job_name=settings.job.job_name,
        uid=TRAINER_UID,
        tolerations=GPU_TOLERATIONS if settings.job.gpus_per_node else (),
    ),
)
# Optional: a tracking server the job logs to (it must answer before the job starts).
mlflow = None
if settings.mlflow_server:
    mlflow = MlflowServer(
        "mlflow",
        settings.mlflow_server,
        image=image.reference,
        image_pull_secret=access.image_pull_secret,
        start_after=[access, image],
        opts=on_cluster,
    )
job = TrainingJob(
    "training",
    settings.job,
    namespace=access.namespace,
    service_account=access.service_account,
    image=image.reference,
    hf_token_secret=access.hf_token_secret,
    hf_token_key=HF_TOKEN_KEY,
    image_pull_secret=access.image_pull_secret,
    kubeconfig=cluster.kubectl_kubeconfig,
    start_after=[trainer, image, *(mlflow.ready if mlflow else [])],
    runtime_class=settings.gpu.runtime_class if settings.gpu else None,
    opts=on_cluster,
)
if settings.monitoring:
    TrainingMonitoring(
        "monitoring",
        settings.monitoring,
        pulumi.ResourceOptions.merge(on_cluster, pulumi.ResourceOptions(depends_on=[access])),
    )
# The namespace in its context: kubectl and the Kubeflow SDK look where the job is without being told.
pulumi.export(
    "kubeconfig", cluster.kubeconfig.apply(lambda text: with_namespace(text, settings.access.namespace))
)
pulumi.export("clusterName", settings.cluster.name)
pulumi.export("namespace", access.namespace)
pulumi.export("trainJobName", job.job_name)
pulumi.export("podNames", job.pod_names)
pulumi.export("checkpointLocation", job.checkpoint_location)
pulumi.export("image", image.pinned)
pulumi.export("logsCommand", job.logs_command)
