"""An MLflow tracking server (`mlflowServer: true`) the job logs to and waits for: the trainer image's
mlflow-skinny, SQLite and artifacts on a claim, the Service `mlflow` on port 5000."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pulumi
import pulumi_kubernetes as k8s

from components.settings import QUANTITY, Values, matching

SERVICE_NAME = "mlflow"
PORT = 5000
DATA_MOUNT = "/mlflow"
SERVER_UID = 1000
HEALTH_PATH = "/health"


def tracking_uri(namespace: str) -> str:
    return f"http://{SERVICE_NAME}.{namespace}.svc.cluster.local:{PORT}"


def allowed_hosts(namespace: str) -> list[str]:
    """The Service's DNS names and localhost: MLflow 3's security middleware otherwise answers them 403.
    upstream: mlflow/mlflow mlflow/server/security_utils.py @ v3"""
    names = [
        f"{SERVICE_NAME}.{namespace}.svc.cluster.local",
        f"{SERVICE_NAME}.{namespace}.svc",
        f"{SERVICE_NAME}.{namespace}",
        SERVICE_NAME,
        "localhost",
        "127.0.0.1",
    ]
    return [pattern for name in names for pattern in (name, f"{name}:*")]


def server_command(data_dir: str, namespace: str, port: int = PORT, host: str = "0.0.0.0") -> list[str]:
    """Proxied artifacts: clients upload through the server, so the training pods need no access to its volume."""
    return [
        "python", "-m", "mlflow", "server",
        "--backend-store-uri", f"sqlite:///{data_dir}/mlflow.db",
        "--artifacts-destination", f"{data_dir}/artifacts",
        "--host", host,
        "--port", str(port),
        "--workers", "1",
        "--allowed-hosts", ",".join(allowed_hosts(namespace)),
    ]  # fmt: skip


# MLflow 3's job runner (huey) is not in mlflow-skinny, and tracking needs no jobs.
SERVER_ENVIRONMENT = {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}


@dataclass(frozen=True)
class MlflowServerArgs:
    namespace: str
    storage_size: str  # its claim: SQLite store and artifacts
    storage_class: str = ""  # empty: the cluster default


def mlflow_args(values: Values, namespace: str) -> MlflowServerArgs | None:
    if not values["mlflowServer"]:
        return None
    size = matching(values, "mlflowStorageSize", QUANTITY, "a Kubernetes quantity such as 5Gi")
    return MlflowServerArgs(namespace, size, str(values["checkpointStorageClass"]))


class MlflowServer(pulumi.ComponentResource):
    """PersistentVolumeClaim, Deployment and Service of an MLflow tracking server."""

    def __init__(
        self,
        name: str,
        args: MlflowServerArgs,
        *,
        image: pulumi.Input[str],
        image_pull_secret: pulumi.Input[str] | None,
        start_after: list[pulumi.Resource],
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        super().__init__("trainstack:index:MlflowServer", name, None, opts)
        labels: dict[str, str] = {
            "app.kubernetes.io/name": "mlflow",
            "app.kubernetes.io/part-of": "trainstack",
        }
        claim = k8s.core.v1.PersistentVolumeClaim(
            f"{name}-data",
            metadata={
                "name": f"{SERVICE_NAME}-data",
                "namespace": args.namespace,
                "annotations": {"pulumi.com/skipAwait": "true"},  # binds with its first pod
            },
            spec={
                "access_modes": ["ReadWriteOnce"],
                "resources": {"requests": {"storage": args.storage_size}},
                "storage_class_name": args.storage_class or None,
            },
            opts=pulumi.ResourceOptions(parent=self, depends_on=start_after),
        )
        health = {"path": HEALTH_PATH, "port": "http"}
        pod_spec: dict[str, Any] = {
            "security_context": {
                "run_as_non_root": True,
                "run_as_user": SERVER_UID,
                "run_as_group": SERVER_UID,
                "fs_group": SERVER_UID,
                "seccomp_profile": {"type": "RuntimeDefault"},
            },
            "containers": [
                {
                    "name": "mlflow",
                    "image": image,
                    "command": server_command(DATA_MOUNT, args.namespace),
                    "env": [{"name": key, "value": value} for key, value in SERVER_ENVIRONMENT.items()],
                    "ports": [{"name": "http", "container_port": PORT}],
                    # The first start creates and migrates the SQLite schema, which takes a while.
                    "startup_probe": {"http_get": health, "period_seconds": 5, "failure_threshold": 60},
                    "readiness_probe": {"http_get": health, "period_seconds": 10},
                    "resources": {
                        "requests": {"cpu": "100m", "memory": "512Mi"},
                        "limits": {"memory": "2Gi"},
                    },
                    "security_context": {
                        "allow_privilege_escalation": False,
                        "capabilities": {"drop": ["ALL"]},
                        "run_as_non_root": True,
                    },
                    "volume_mounts": [{"name": "data", "mount_path": DATA_MOUNT}],
                }
            ],
            "volumes": [{"name": "data", "persistent_volume_claim": {"claim_name": f"{SERVICE_NAME}-data"}}],
        }
        if image_pull_secret is not None:
            pod_spec["image_pull_secrets"] = [{"name": image_pull_secret}]
        spec: Any = {  # the SDK's TypedDicts do not take a plain dict
            "replicas": 1,
            # One writer of the SQLite file on a ReadWriteOnce claim: the old pod goes before the new one.
            "strategy": {"type": "Recreate"},
            "selector": {"match_labels": labels},
            "template": {"metadata": {"labels": labels}, "spec": pod_spec},
        }
        deployment = k8s.apps.v1.Deployment(
            f"{name}-deployment",
            metadata={"name": SERVICE_NAME, "namespace": args.namespace, "labels": labels},
            spec=spec,
            # Pulumi waits for the rollout: the TrainJob starts only once the server answers /health.
            opts=pulumi.ResourceOptions(parent=self, depends_on=[claim, *start_after]),
        )
        service = k8s.core.v1.Service(
            f"{name}-service",
            metadata={"name": SERVICE_NAME, "namespace": args.namespace, "labels": labels},
            spec={"selector": labels, "ports": [{"name": "http", "port": PORT, "target_port": "http"}]},
            opts=pulumi.ResourceOptions(parent=self, depends_on=start_after),
        )
        self.ready = [deployment, service]
        self.register_outputs({})
