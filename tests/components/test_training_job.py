"""The training job: TrainingRuntime and TrainJob specs against Kubeflow's API, and the component's graph."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pulumi
import pytest
from kubeflow_trainer_api.models import TrainerV1alpha1TrainingRuntime, TrainerV1alpha1TrainJob

from components.shell import KUBECONFIG_PRELUDE, script
from components.training_job import (
    CHECKPOINT_MOUNT,
    CONFIG_DIR,
    JOBSET_NAME_LABEL,
    POD_NAMES_SCRIPT,
    RUNTIME_NAME,
    TrainingJob,
    TrainingJobArgs,
    config_map_name,
    job_paths,
    train_job_spec,
    training_runtime_spec,
)
from tests.k8s_validation import normalise
from tests.shell_stubs import run_file, stub_tools
from tests.stack_helpers import evaluate, reveal
from trainer import PREEMPTED_EXIT_CODE

IMAGE = "trainstack/trainer:abc"


def job_args(**changes: Any) -> TrainingJobArgs:
    base: dict[str, Any] = {
        "job_name": "gpt",
        "num_nodes": 2,
        "gpus_per_node": 4,
        "cpu_per_node": "8",
        "memory_per_node": "32Gi",
        "shm_size": "8Gi",
        "max_restarts": 5,
        "checkpoint_size": "10Gi",
        "checkpoint_storage_class": "nfs-client",
        "train_config": "train: {max_steps: 1}\n",
        "pod_names_timeout_seconds": 30,
    }
    return TrainingJobArgs(**{**base, **changes})


def trainjob(args: TrainingJobArgs, hf: str | None = "hf-token", pull: str | None = None) -> dict[str, Any]:
    spec = train_job_spec(
        args, image=IMAGE, service_account="trainer", hf_token_secret=hf, image_pull_secret=pull
    )
    return {
        "apiVersion": "trainer.kubeflow.org/v1alpha1",
        "kind": "TrainJob",
        "metadata": {"name": args.job_name},
        "spec": spec,
    }


def round_trip(model: Any, document: dict[str, Any]) -> dict[str, Any]:
    parsed = model.from_dict(document)
    return normalise(parsed.to_dict())


def pod_patch(document: dict[str, Any]) -> dict[str, Any]:
    patch = document["spec"]["runtimePatches"][0]["trainingRuntimeSpec"]
    return patch["template"]["spec"]["replicatedJobs"][0]["template"]["spec"]["template"]["spec"]


def test_job_paths_follow_the_contract() -> None:
    assert job_paths("gpt") == {
        "checkpoint.dir": "/mnt/checkpoints/gpt/checkpoints",
        "output.dir": "/mnt/checkpoints/gpt/output",
        "data.cache_dir": "/mnt/checkpoints/gpt/cache",
    }
    assert config_map_name("gpt", "a") != config_map_name("gpt", "b")


def test_train_job_round_trips_through_the_kubeflow_model() -> None:
    document = trainjob(job_args(), pull="registry-credentials")
    assert round_trip(TrainerV1alpha1TrainJob, document) == document


def test_the_round_trip_catches_a_misspelt_field() -> None:
    document = trainjob(job_args())
    document["spec"]["trainer"]["numNode"] = 2  # the models drop unknown fields silently
    assert round_trip(TrainerV1alpha1TrainJob, document) != document


def test_trainer_runs_the_contract_command_with_gpus_and_the_secret_env() -> None:
    trainer = trainjob(job_args())["spec"]["trainer"]
    assert trainer["command"] + trainer["args"] == [
        "python",
        "-m",
        "trainer",
        "launch",
        "--config",
        "/etc/trainstack/train.yaml",
    ]
    assert trainer["numNodes"] == 2 and trainer["numProcPerNode"] == 4
    assert trainer["resourcesPerNode"]["limits"]["nvidia.com/gpu"] == 4
    assert {
        "name": "HF_TOKEN",
        "valueFrom": {"secretKeyRef": {"name": "hf-token", "key": "token"}},
    } in trainer["env"]
    assert {"name": "DS_ACCELERATOR", "value": "cuda"} in trainer["env"]
    assert all("value" not in item or item["name"] != "HF_TOKEN" for item in trainer["env"])


def test_runtime_patches_set_identity_volumes_and_placement() -> None:
    document = trainjob(job_args(), pull="registry-credentials")
    assert document["spec"]["runtimeRef"] == {
        "apiGroup": "trainer.kubeflow.org",
        "kind": "TrainingRuntime",
        "name": RUNTIME_NAME,
    }
    pod = pod_patch(document)
    assert pod["serviceAccountName"] == "trainer"
    assert pod["imagePullSecrets"] == [{"name": "registry-credentials"}]
    term = pod["affinity"]["podAntiAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"][0]
    assert term == {
        "labelSelector": {"matchLabels": {JOBSET_NAME_LABEL: "gpt"}},
        "topologyKey": "kubernetes.io/hostname",
    }
    assert pod["tolerations"] == [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
    volumes = {volume["name"]: volume for volume in pod["volumes"]}
    assert volumes["checkpoints"]["persistentVolumeClaim"] == {"claimName": "gpt-checkpoints"}
    assert volumes["train-config"]["configMap"] == {"name": job_args().config_map}
    mounts = {mount["mountPath"] for mount in pod["containers"][0]["volumeMounts"]}
    assert mounts == {CHECKPOINT_MOUNT, CONFIG_DIR}


def test_cpu_job_has_no_gpu_resources_or_tolerations() -> None:
    document = trainjob(job_args(gpus_per_node=0, num_nodes=1), hf=None)
    trainer = document["spec"]["trainer"]
    assert "nvidia.com/gpu" not in trainer["resourcesPerNode"]["requests"]
    assert trainer["numProcPerNode"] == 1
    assert trainer["env"] == [{"name": "DS_ACCELERATOR", "value": "cpu"}]
    assert "tolerations" not in pod_patch(document)


def test_runtime_restarts_the_jobset_and_runs_pods_safely() -> None:
    document: dict[str, Any] = {
        "apiVersion": "trainer.kubeflow.org/v1alpha1",
        "kind": "TrainingRuntime",
        "metadata": {"name": RUNTIME_NAME},
        "spec": training_runtime_spec(job_args(), IMAGE),
    }
    assert round_trip(TrainerV1alpha1TrainingRuntime, document) == document
    jobset = document["spec"]["template"]["spec"]
    assert jobset["failurePolicy"]["maxRestarts"] == 5
    assert jobset["failurePolicy"]["rules"][0]["action"] == "RestartJobSetAndIgnoreMaxRestarts"
    job = jobset["replicatedJobs"][0]["template"]["spec"]
    assert job["backoffLimit"] == 0
    exit_rule = job["podFailurePolicy"]["rules"][1]["onExitCodes"]
    assert exit_rule["values"] == [PREEMPTED_EXIT_CODE]
    pod = job["template"]["spec"]
    assert pod["restartPolicy"] == "Never"
    assert pod["securityContext"]["runAsUser"] == 1000 and pod["securityContext"]["runAsNonRoot"] is True
    container = pod["containers"][0]
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert {"name": "dshm", "mountPath": "/dev/shm"} in container["volumeMounts"]
    assert {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": "8Gi"}} in pod["volumes"]


@pytest.mark.parametrize(("num_nodes", "mode"), [(1, "ReadWriteOnce"), (2, "ReadWriteMany")])
def test_component_graph(num_nodes: int, mode: str) -> None:
    args = job_args(num_nodes=num_nodes)

    def program() -> None:
        gate = pulumi.CustomResource("test:index:Gate", "gate", {})
        job = TrainingJob(
            "job",
            args,
            namespace="team",
            service_account="trainer",
            image=IMAGE,
            hf_token_secret=None,
            image_pull_secret=None,
            kubeconfig=pulumi.Output.secret("kc"),
            start_after=[gate],
        )
        pulumi.export("pods", job.pod_names)
        pulumi.export("job", job.job_name)

    run = evaluate(program)
    claim = run.one("kubernetes:core/v1:PersistentVolumeClaim")
    assert claim.inputs["spec"]["accessModes"] == [mode]
    assert claim.inputs["spec"]["storageClassName"] == "nfs-client"
    assert claim.inputs["metadata"]["annotations"] == {"pulumi.com/skipAwait": "true"}
    config = run.one("kubernetes:core/v1:ConfigMap")
    assert config.inputs["data"] == {"train.yaml": args.train_config}
    assert config.inputs["metadata"]["name"] == args.config_map
    job = run.one("kubernetes:trainer.kubeflow.org/v1alpha1:TrainJob")
    runtime = run.one("kubernetes:trainer.kubeflow.org/v1alpha1:TrainingRuntime")
    gate = run.one("test:index:Gate")
    for dependency in (claim, config, runtime, gate):
        assert run.depends_on(job, dependency)
    assert run.depends_on(runtime, gate)
    assert job.replace_on_changes == ["spec"] and job.delete_before_replace
    pods = run.one("command:local:Command", "job-pods")
    assert run.depends_on(pods, job)
    assert (
        pods.inputs["create"]
        == KUBECONFIG_PRELUDE + POD_NAMES_SCRIPT
        == KUBECONFIG_PRELUDE + script("training_job_pods.sh")
    )
    # The TrainJob's id (namespace/name) survives a replacement; its uid does not, so the pods are listed anew.
    assert "uid-job-trainjob" in pods.inputs["triggers"]
    assert reveal(pods.inputs["environment"])["WANT"] == str(num_nodes)
    assert reveal(run.outputs["pods"]) == [f"gpt-node-0-{rank}-x" for rank in range(num_nodes)]
    assert reveal(run.outputs["job"]) == "gpt"


def run_pod_names_script(
    tmp_path: Path, kubectl_output: str, timeout: int, claim_phase: str = "Bound", check: bool = True
) -> subprocess.CompletedProcess[str]:
    """training_job_pods.sh with a kubectl that lists kubectl_output's pods and the claim in claim_phase."""
    environment, _ = stub_tools(
        tmp_path,
        {
            "kubectl": f"""case "$1 $2" in
  "get pods") echo '{kubectl_output}' ;;
  "get pvc") echo '{claim_phase}' ;;
  "describe pvc") echo "Events: ProvisioningFailed storageclass.storage.k8s.io nfs-client not found" ;;
esac""",
            "sleep": "exit 0",
        },
    )
    variables = {"NAMESPACE": "team", "SELECTOR": "x=y", "WANT": "2", "CLAIM": "gpt-checkpoints"}
    return run_file(
        "training_job_pods.sh", {**environment, **variables, "TIMEOUT": str(timeout)}, check=check
    )


def test_pod_names_script_prints_the_pods_once_all_exist(tmp_path: Path) -> None:
    result = run_pod_names_script(tmp_path, "b a", timeout=60)
    assert result.stdout.split() == ["a", "b"] and result.stderr == ""


def test_pod_names_script_gives_up_after_its_timeout(tmp_path: Path) -> None:
    result = run_pod_names_script(tmp_path, "a", timeout=0)
    assert result.stdout.split() == ["a"]
    assert "1 of 2 pods" in result.stderr


def test_a_claim_that_never_binds_fails_instead_of_looking_like_success(tmp_path: Path) -> None:
    """Pods stay Pending forever behind an unbound claim: `pulumi up` must fail and say why."""
    result = run_pod_names_script(tmp_path, "b a", timeout=0, claim_phase="Pending", check=False)
    assert result.returncode == 1 and result.stdout == ""
    assert "the checkpoint claim team/gpt-checkpoints is not bound after 0s" in result.stderr
    assert "nfs-client not found" in result.stderr
