"""The Kubeflow SDK (kubeflow 0.5.0, TrainerClient), as users of Kubeflow Trainer watch their jobs, against our
rendered TrainingRuntime and TrainJob (and the pod the Trainer makes from them) on a stand-in API server, with
the kubeconfig as the stack exports it. Issue 25 case 11: on CPU stacks every call raised "Unknown device type
in the container resources" (a node container with memory limits only), and each looked in `default`."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import yaml
from kubeflow.trainer import KubernetesBackendConfig, TrainerClient

from components.cluster.kubeconfig import with_namespace
from components.training_job import train_job_spec
from components.training_runtime import RUNTIME_NAME, training_runtime_spec
from tests.support.fake_apiserver import reply

from .test_training_job import IMAGE, job_args

NAMESPACE = "trainstack"
CREATED = "2026-12-05T03:00:00Z"
LOG_LINES = ['{"event": "train", "step": 10, "loss": 3.1}', '{"event": "val", "step": 10, "val_loss": 3.2}']


def merged(base: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    """A strategic-merge stand-in for what the Trainer does with runtimePatches: mappings key by key, lists of
    named entries by name, anything else replaced."""
    result = dict(base)
    for key, value in patch.items():
        if isinstance(value, dict) and isinstance(result.get(key), dict):
            result[key] = merged(result[key], value)
        elif isinstance(value, list) and all(
            isinstance(v, dict) and "name" in v for v in value + result.get(key, [])
        ):
            by_name = {entry["name"]: entry for entry in result.get(key, [])}
            for entry in value:
                by_name[entry["name"]] = merged(by_name.get(entry["name"], {}), entry)
            result[key] = list(by_name.values())
        else:
            result[key] = value
    return result


def objects(gpus_per_node: int) -> dict[str, Any]:
    """The runtime and the job as the stack renders them, and node 0's pod as the Trainer builds it: the
    runtime's node container with the job's resourcesPerNode, env and image."""
    args = job_args(job_name="gpt-train", num_nodes=1, gpus_per_node=gpus_per_node)
    runtime: dict[str, Any] = {
        "apiVersion": "trainer.kubeflow.org/v1alpha1", "kind": "TrainingRuntime",
        "metadata": {"name": RUNTIME_NAME, "namespace": NAMESPACE, "labels": {"trainer.kubeflow.org/framework": "torch"}},
        "spec": training_runtime_spec(args, IMAGE),
    }  # fmt: skip
    spec = train_job_spec(
        args,
        image=IMAGE,
        service_account="trainer",
        hf_token_secret=None,
        hf_token_key="token",
        image_pull_secret=None,
    )
    job: dict[str, Any] = {
        "apiVersion": "trainer.kubeflow.org/v1alpha1", "kind": "TrainJob",
        "metadata": {"name": args.job_name, "namespace": NAMESPACE, "creationTimestamp": CREATED},
        "spec": spec,
    }  # fmt: skip
    replicated = next(r for r in runtime["spec"]["template"]["spec"]["replicatedJobs"] if r["name"] == "node")
    pod_spec = json.loads(json.dumps(replicated["template"]["spec"]["template"]["spec"]))
    for patch in spec.get("runtimePatches", []):
        for job_patch in patch["trainingRuntimeSpec"]["template"]["spec"]["replicatedJobs"]:
            pod_spec = merged(pod_spec, job_patch["template"]["spec"]["template"]["spec"])
    node = next(c for c in pod_spec["containers"] if c["name"] == "node")
    trainer = spec["trainer"]
    node.update(image=trainer.get("image", IMAGE), resources=trainer["resourcesPerNode"])
    node["env"] = [*node.get("env", []), *trainer.get("env", [])]
    pod = {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {
            "name": "gpt-train-node-0-0-abcde", "namespace": NAMESPACE, "creationTimestamp": CREATED,
            "labels": {"jobset.sigs.k8s.io/jobset-name": "gpt-train", "jobset.sigs.k8s.io/replicatedjob-name": "node",
                       "batch.kubernetes.io/job-completion-index": "0"},
        },
        "spec": pod_spec,
        "status": {"phase": "Running"},
    }  # fmt: skip
    return {"runtime": runtime, "job": job, "pod": pod}


def serve(found: dict[str, Any]) -> tuple[ThreadingHTTPServer, list[str]]:
    """A plain-HTTP stand-in API server answering the SDK's reads in NAMESPACE only (404 elsewhere)."""
    asked: list[str] = []
    trainer_api = f"/apis/trainer.kubeflow.org/v1alpha1/namespaces/{NAMESPACE}"
    routes = {
        f"{trainer_api}/trainjobs": {"apiVersion": "trainer.kubeflow.org/v1alpha1", "kind": "TrainJobList",
                                     "metadata": {}, "items": [found["job"]]},
        f"{trainer_api}/trainjobs/gpt-train": found["job"],
        f"{trainer_api}/trainingruntimes/{RUNTIME_NAME}": found["runtime"],
        f"/api/v1/namespaces/{NAMESPACE}/pods": {"apiVersion": "v1", "kind": "PodList", "metadata": {},
                                                 "items": [found["pod"]]},
    }  # fmt: skip

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            url = urlsplit(self.path)
            asked.append(url.path)
            if url.path == f"/api/v1/namespaces/{NAMESPACE}/pods/{found['pod']['metadata']['name']}/log":
                assert parse_qs(url.query).get("container") == ["node"]
                reply(self, 200, "\n".join(LOG_LINES).encode(), "text/plain")
            elif url.path in routes:
                reply(self, 200, json.dumps(routes[url.path]).encode())
            else:
                reply(self, 404, b'{"kind": "Status", "status": "Failure", "code": 404}')

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, asked


@pytest.fixture
def exported_kubeconfig(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """KUBECONFIG pointing at the stand-in, rewritten as __main__.py exports it (with_namespace)."""
    holder: dict[str, Any] = {}

    def start(found: dict[str, Any]) -> list[str]:
        server, asked = serve(found)
        holder["server"] = server
        plain = {
            "apiVersion": "v1", "kind": "Config", "current-context": "kind-trainstack",
            "clusters": [{"name": "kind-trainstack", "cluster": {"server": f"http://127.0.0.1:{server.server_port}"}}],
            "contexts": [{"name": "kind-trainstack", "context": {"cluster": "kind-trainstack", "user": "admin"}}],
            "users": [{"name": "admin", "user": {"token": "t"}}],
        }  # fmt: skip
        path = tmp_path / "kubeconfig"
        path.write_text(with_namespace(yaml.safe_dump(plain), NAMESPACE))
        # `export KUBECONFIG=...` before Python starts, as the docs say: the kubernetes client reads it at import
        # (kube_config.KUBE_CONFIG_DEFAULT_LOCATION), and the SDK takes the namespace from there, not config_file.
        monkeypatch.setenv("KUBECONFIG", str(path))
        monkeypatch.setattr("kubernetes.config.kube_config.KUBE_CONFIG_DEFAULT_LOCATION", str(path))
        return asked

    yield start
    if "server" in holder:
        holder["server"].shutdown()


@pytest.mark.parametrize(("gpus", "device", "count"), [(0, "cpu", "8"), (4, "gpu", "4")])
def test_every_sdk_call_works_on_our_job(
    exported_kubeconfig: Any, gpus: int, device: str, count: str
) -> None:
    start = exported_kubeconfig
    asked = start(objects(gpus))
    client = TrainerClient(KubernetesBackendConfig())  # the namespace comes from the kubeconfig
    jobs = client.list_jobs()
    assert [job.name for job in jobs] == ["gpt-train"]
    job = client.get_job("gpt-train")
    assert job.runtime.name == RUNTIME_NAME and job.num_nodes == 1
    node = next(step for step in job.steps if step.name == "node-0")
    assert (node.device, node.device_count) == (device, count)
    assert list(client.get_job_logs("gpt-train")) == LOG_LINES
    running = client.wait_for_job_status("gpt-train", status={"Running"}, timeout=10, polling_interval=1)
    assert running.status == "Running"
    assert all(
        f"/namespaces/{NAMESPACE}/" in p for p in asked if "/namespaces/" in p and "kubeflow-system" not in p
    )
