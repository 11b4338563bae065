"""Prometheus access to rank 0's /metrics (trainer/prometheus.py): the Service `<job>-metrics`, and with
`prometheusPodMonitor: true` a PodMonitor (whether the cluster has its CRD cannot be asked at preview)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import pulumi
import pulumi_kubernetes as k8s

from components.settings import Values, error, port

PORT_NAME = "metrics"
METRICS_PATH = "/metrics"
POD_MONITOR_API_VERSION = "monitoring.coreos.com/v1"


@dataclass(frozen=True)
class MonitoringArgs:
    """Where rank 0's /metrics is and how Prometheus finds it."""

    namespace: str
    job_name: str  # the Service is <job>-metrics
    port: int  # the container port named "metrics"
    rank0_labels: Mapping[str, str] = field(default_factory=dict)  # the rank-0 pod only
    pod_monitor: bool = False  # the cluster must have the Prometheus Operator's CRDs
    scrape_interval: str = "30s"


def pod_monitor_spec(args: MonitoringArgs) -> dict[str, object]:
    return {
        "selector": {"matchLabels": dict(args.rank0_labels)},
        "namespaceSelector": {"matchNames": [args.namespace]},
        "podMetricsEndpoints": [{"port": PORT_NAME, "path": METRICS_PATH, "interval": args.scrape_interval}],
    }


def metrics_port(values: Values) -> int:
    number = port(values, "metricsPort")
    if values["prometheusPodMonitor"] and not number:
        raise error("prometheusPodMonitor", "needs metricsPort > 0 (the port the PodMonitor scrapes)")
    return number


def monitoring_args(
    values: Values, number: int, *, namespace: str, job_name: str, rank0_labels: Mapping[str, str]
) -> MonitoringArgs | None:
    if not number:
        return None
    return MonitoringArgs(
        namespace, job_name, number, rank0_labels, pod_monitor=bool(values["prometheusPodMonitor"])
    )


class TrainingMonitoring(pulumi.ComponentResource):
    """The metrics Service and the optional PodMonitor."""

    def __init__(self, name: str, args: MonitoringArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("trainstack:index:TrainingMonitoring", name, None, opts)
        labels = {
            "app.kubernetes.io/name": f"{args.job_name}-metrics",
            "app.kubernetes.io/part-of": "trainstack",
        }
        k8s.core.v1.Service(
            f"{name}-service",
            metadata={"name": f"{args.job_name}-metrics", "namespace": args.namespace, "labels": labels},
            spec={
                "selector": dict(args.rank0_labels),
                "ports": [{"name": PORT_NAME, "port": args.port, "target_port": PORT_NAME}],
            },
            opts=pulumi.ResourceOptions(parent=self),
        )
        if args.pod_monitor:
            k8s.apiextensions.CustomResource(
                f"{name}-pod-monitor",
                api_version=POD_MONITOR_API_VERSION,
                kind="PodMonitor",
                metadata={"name": args.job_name, "namespace": args.namespace, "labels": labels},
                spec=pod_monitor_spec(args),
                opts=pulumi.ResourceOptions(parent=self),
            )
        self.register_outputs({})
