"""The MLflow tracking server as the stack runs it (the same command and environment, on this machine), with a
training run that is preempted and resumed into the same MLflow run; and the component's graph."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from components.mlflow_server import (
    PORT,
    SERVER_ENVIRONMENT,
    MlflowServer,
    MlflowServerArgs,
    allowed_hosts,
    server_command,
    tracking_uri,
)
from tests.support.stack_helpers import evaluate
from tests.trainer.conftest import (
    REPO,
    TINY_CONFIG,
    metrics,
    run,
    run_overrides,
    trainer_command,
    trainer_env,
    wait_for,
)
from trainer import PREEMPTED_EXIT_CODE
from trainer.distributed import free_port

NAMESPACE = "team-a"


def test_the_service_name_is_an_allowed_host() -> None:
    assert tracking_uri(NAMESPACE) == f"http://mlflow.{NAMESPACE}.svc.cluster.local:{PORT}"
    hosts = allowed_hosts(NAMESPACE)
    assert f"mlflow.{NAMESPACE}.svc.cluster.local:*" in hosts and "localhost:*" in hosts
    command = server_command("/data", NAMESPACE)
    assert command[command.index("--backend-store-uri") + 1] == "sqlite:////data/mlflow.db"
    assert command[command.index("--allowed-hosts") + 1] == ",".join(hosts)


def test_component_graph() -> None:
    def program() -> None:
        MlflowServer(
            "mlflow",
            MlflowServerArgs(NAMESPACE, "3Gi"),
            image="img:1",
            image_pull_secret=None,
            start_after=[],
        )

    run = evaluate(program)
    claim = run.one("kubernetes:core/v1:PersistentVolumeClaim").plain
    assert claim["spec"]["resources"]["requests"]["storage"] == "3Gi"
    deployment = run.one("kubernetes:apps/v1:Deployment")
    assert deployment.plain["spec"]["strategy"] == {"type": "Recreate"}  # one SQLite writer at a time
    assert run.depends_on(deployment, run.one("kubernetes:core/v1:PersistentVolumeClaim"))
    service = run.one("kubernetes:core/v1:Service").plain
    assert service["metadata"]["name"] == "mlflow" and service["spec"]["ports"][0]["port"] == PORT


def get_status(url: str, host: str) -> int:
    request = urllib.request.Request(url, headers={"Host": host})
    try:
        with urllib.request.urlopen(request, timeout=30) as reply:
            return int(reply.status)
    except urllib.error.HTTPError as error:
        return int(error.code)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """`mlflow server` as the Deployment runs it, on a free loopback port."""
    data = tmp_path_factory.mktemp("mlflow-data")
    port = free_port()
    command = server_command(str(data), NAMESPACE, port=port, host="127.0.0.1")
    assert command[:3] == ["python", "-m", "mlflow"]
    log = open(data / "server.log", "w")  # noqa: SIM115 - open for the server's whole life
    process = subprocess.Popen(
        [sys.executable, *command[1:]], env={**os.environ, **SERVER_ENVIRONMENT}, stdout=log, stderr=log,
        start_new_session=True,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 600  # the first start creates and migrates the SQLite schema: slow here
    while True:
        try:
            if get_status(f"{url}/health", f"127.0.0.1:{port}") == 200:
                break
        except OSError:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            pytest.fail(f"mlflow server did not start:\n{(data / 'server.log').read_text()[-3000:]}")
        time.sleep(1)
    yield url
    os.killpg(process.pid, signal.SIGTERM)  # uvicorn's worker runs in the server's process group
    process.wait(timeout=60)
    log.close()


@pytest.mark.slow
def test_server_accepts_its_service_name_and_rejects_other_hosts(server: str) -> None:
    search = f"{server}/api/2.0/mlflow/experiments/search?max_results=1"
    assert get_status(search, f"mlflow.{NAMESPACE}.svc.cluster.local:{PORT}") == 200
    assert get_status(search, f"mlflow.{NAMESPACE}:{PORT}") == 200
    assert get_status(search, "attacker.example:5000") == 403  # MLflow's DNS-rebinding protection stays on


@pytest.mark.slow
def test_a_preempted_run_resumes_into_the_same_run_on_the_server(server: str, tmp_path: Path) -> None:
    from mlflow.tracking import MlflowClient

    settings = {
        "train__max_steps": 40,
        "checkpoint__every_steps": 10,
        "output__tracking": "mlflow",
        "output__tracking_uri": server,
        "output__experiment": "server-test",
    }
    args = trainer_command("train", TINY_CONFIG, run_overrides(tmp_path, **settings))
    process = subprocess.Popen(args, cwd=REPO, env=trainer_env(), text=True,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip
    wait_for(tmp_path / "checkpoints" / "step_000010", process)
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=300)
    assert process.returncode == PREEMPTED_EXIT_CODE, err
    client = MlflowClient(server)
    experiment = client.get_experiment_by_name("server-test")
    assert experiment is not None
    [preempted] = client.search_runs([experiment.experiment_id])
    assert preempted.info.status == "KILLED"  # stopped by a signal; the run is not over

    resumed = run(args)
    assert resumed.returncode == 0, resumed.stderr
    assert "warning: MLflow" not in err + resumed.stderr
    [finished] = client.search_runs([experiment.experiment_id])
    assert finished.info.run_id == preempted.info.run_id and finished.info.status == "FINISHED"
    stopped_at = next(m["step"] for m in metrics(tmp_path) if m["event"] == "preempted")
    history = sorted(m.step for m in client.get_metric_history(finished.info.run_id, "loss"))
    assert history == sorted({m["step"] for m in metrics(tmp_path) if m["event"] == "train"})
    assert min(history) < stopped_at < max(history) == 40
    assert finished.data.tags["preempted.signal"] == "SIGTERM"
    # Artifacts went through the server (mlflow-artifacts:/), not to a path of this machine.
    assert finished.info.artifact_uri.startswith("mlflow-artifacts:")
    assert {"summary.json", "loss.png"} <= {a.path for a in client.list_artifacts(finished.info.run_id)}
