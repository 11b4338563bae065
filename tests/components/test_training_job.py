"""The training job: TrainingRuntime and TrainJob specs against Kubeflow's API, and the component's graph."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pulumi
import pytest
import yaml
from kubeflow_trainer_api.models import TrainerV1alpha1TrainingRuntime, TrainerV1alpha1TrainJob

from components.checkpoints import CHECKPOINT_MOUNT, ObjectStore, default_grace_period_seconds, job_paths
from components.shell import KUBECONFIG_PRELUDE, script
from components.training_job import (
    CONFIG_DIR,
    JOBSET_NAME_LABEL,
    POD_NAMES_SCRIPT,
    TrainingJob,
    TrainingJobArgs,
    config_map_name,
    train_job_spec,
)
from components.training_runtime import RUNTIME_NAME, training_runtime_spec
from tests.support.k8s_validation import KUBERNETES_VERSION, SCHEMAS, normalise, unknown_fields
from tests.support.shell_stubs import run_file, stub_tools
from tests.support.stack_helpers import REPO_ROOT as REPO
from tests.support.stack_helpers import evaluate, reveal
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
        "checkpoint_access_mode": "ReadWriteMany",
        "train_config": "train: {max_steps: 1}\n",
        "pod_names_timeout_seconds": 30,
        "termination_grace_period_seconds": 90,
    }
    return TrainingJobArgs(**{**base, **changes})


def trainjob(args: TrainingJobArgs, hf: str | None = "hf-token", pull: str | None = None) -> dict[str, Any]:
    spec = train_job_spec(
        args,
        image=IMAGE,
        service_account="trainer",
        hf_token_secret=hf,
        hf_token_key="token",
        image_pull_secret=pull,
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
        "data.cache_dir": "/mnt/checkpoints/tokens",  # token shards: shared by the jobs on the volume
    }
    assert config_map_name("gpt", "a") != config_map_name("gpt", "b")


def test_job_paths_put_only_the_checkpoints_in_an_object_store() -> None:
    assert job_paths("gpt", "s3://bucket/team/") == {
        "checkpoint.dir": "s3://bucket/team/gpt/checkpoints",
        "output.dir": "/mnt/checkpoints/gpt/output",
        "data.cache_dir": "/mnt/checkpoints/tokens",  # token shards: shared by the jobs on the volume
    }


STORE = ObjectStore(
    url="s3://bucket/team/gpt/checkpoints",
    secret="s3-credentials",
    endpoint="http://minio:9000",
    region="eu-1",
)


def test_an_object_store_reaches_the_pods_by_secret_reference_only() -> None:
    document = trainjob(job_args(object_store=STORE))
    env = {item["name"]: item for item in document["spec"]["trainer"]["env"]}
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        assert env[key] == {
            "name": key,
            "valueFrom": {"secretKeyRef": {"name": "s3-credentials", "key": key}},
        }
    assert env["AWS_SESSION_TOKEN"]["valueFrom"]["secretKeyRef"] == {
        "name": "s3-credentials", "key": "AWS_SESSION_TOKEN", "optional": True}  # fmt: skip
    assert env["AWS_ENDPOINT_URL_S3"] == {"name": "AWS_ENDPOINT_URL_S3", "value": "http://minio:9000"}
    assert env["AWS_REGION"] == {"name": "AWS_REGION", "value": "eu-1"}
    assert round_trip(TrainerV1alpha1TrainJob, document) == document
    # the variables as Kubernetes 1.33 reads a container's env (strict: no unknown field)
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
           "spec": {"containers": [{"name": "node", "image": IMAGE, "env": list(env.values())}]}}  # fmt: skip
    kubernetes_validate.validate(pod, KUBERNETES_VERSION, strict=True)
    # the claim stays: outputs and the token cache
    assert pod_patch(document)["volumes"][0]["persistentVolumeClaim"] == {"claimName": "gpt-checkpoints"}
    # Amazon S3: no endpoint variable; no object store: no AWS variable at all
    amazon = trainjob(job_args(object_store=ObjectStore(STORE.url, "s3-credentials", "", "us-east-1")))
    assert "AWS_ENDPOINT_URL_S3" not in {item["name"] for item in amazon["spec"]["trainer"]["env"]}
    assert not [i for i in trainjob(job_args())["spec"]["trainer"]["env"] if i["name"].startswith("AWS_")]


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


def test_hugging_face_caches_land_on_the_checkpoint_volume(tmp_path: Path) -> None:
    """An hf:// source: the hub's downloads and datasets' Arrow files go to HF_HOME on the checkpoint volume
    (mounted writable), not under HOME in the container's writable layer, where they were lost with the pod,
    fetched again after every restart and on every node, and counted against the node's ephemeral storage.
    Run for real: the trainer prepares an hf:// source (a local directory, no hub here) with the pod's
    environment, the volume a directory of this test."""
    document = trainjob(job_args())
    env = {item["name"]: item["value"] for item in document["spec"]["trainer"]["env"] if "value" in item}
    assert env["HF_HOME"].startswith(f"{CHECKPOINT_MOUNT}/")
    mounts = pod_patch(document)["containers"][0]["volumeMounts"]
    assert {"name": "checkpoints", "mountPath": CHECKPOINT_MOUNT} in mounts  # writable: no readOnly
    volume, home, corpus = tmp_path / "volume", tmp_path / "home", tmp_path / "corpus"
    home.mkdir()
    corpus.mkdir()
    (corpus / "part.jsonl").write_text("".join(f'{{"text": "line {i} of the play"}}\n' for i in range(200)))
    pod_env = {name: value.replace(CHECKPOINT_MOUNT, str(volume)) for name, value in env.items()}
    process_env = {**os.environ, **pod_env, "HOME": str(home), "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO),
                   "DS_ACCELERATOR": "cpu", "CUDA_VISIBLE_DEVICES": ""}  # fmt: skip
    prepared = subprocess.run(
        [sys.executable, "-m", "trainer", "prepare", "--config", str(REPO / "trainer/configs/tiny.yaml"),
         "--workers", "1", "--set", f"data.path=hf://{corpus}", "--set", f"data.cache_dir={volume}/tokens"],
        cwd=REPO, env=process_env, text=True, capture_output=True, timeout=300,
    )  # fmt: skip
    assert prepared.returncode == 0, prepared.stderr
    assert "from Hugging Face dataset" in prepared.stderr
    assert list((volume / "huggingface" / "datasets").rglob("*.arrow"))
    assert not list(home.rglob("*")), "nothing under HOME"


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
    assert {"name": "DS_ACCELERATOR", "value": "cpu"} in trainer["env"]
    assert "tolerations" not in pod_patch(document)


def test_grace_period_and_a_matching_torchrun_wait() -> None:
    """Issue 18 case 5: Kubernetes' 30 s default and torchrun's own 30 s SIGKILL cut off long saves."""
    document = trainjob(job_args(termination_grace_period_seconds=300))
    assert pod_patch(document)["terminationGracePeriodSeconds"] == 300
    env = {item["name"]: item.get("value") for item in document["spec"]["trainer"]["env"]}
    assert env["TORCH_ELASTIC_SHUTDOWN_TIMEOUT"] == "290"  # torchrun gives up 10 s before Kubernetes does
    assert round_trip(TrainerV1alpha1TrainJob, document) == document


@pytest.mark.parametrize(
    ("parameters", "seconds"),
    [
        (0, 60),  # the floor
        (124_475_904, 89),  # GPT-2 124M: 60 + 2 x 3 x 2.7 s/GB x 1.74 GB = 88.2
        (1_557_686_400, 414),  # GPT-2 1.5B: 60 + 2 x 3 x 2.7 x 21.8 = 413.3
    ],
)
def test_default_grace_period_grows_with_the_checkpoint(parameters: int, seconds: int) -> None:
    assert default_grace_period_seconds(parameters) == seconds


def runtime_document(args: TrainingJobArgs, runtime_class: str | None = None) -> dict[str, Any]:
    return {
        "apiVersion": "trainer.kubeflow.org/v1alpha1",
        "kind": "TrainingRuntime",
        "metadata": {"name": RUNTIME_NAME},
        "spec": training_runtime_spec(args, IMAGE, runtime_class),
    }


def test_runtime_states_what_the_jobset_webhook_would_default() -> None:
    """Issue 18 case 3: on k3s JobSet's mutating webhook may be skipped (failurePolicy Ignore). Its defaults
    (jobset v0.12.0 pkg/webhooks/jobset_webhook.go) are stated here, so the job never depends on them: Indexed
    Jobs (PET_NODE_RANK comes from the completion-index annotation), DNS hostnames published before
    readiness (PET_MASTER_ADDR is <job>-node-0-0.<job>), a success policy, and our own restartPolicy."""
    document = runtime_document(job_args())
    assert round_trip(TrainerV1alpha1TrainingRuntime, document) == document
    jobset = document["spec"]["template"]["spec"]
    assert jobset["successPolicy"] == {"operator": "All"}
    assert jobset["network"] == {"enableDNSHostnames": True, "publishNotReadyAddresses": True}
    job = jobset["replicatedJobs"][0]["template"]["spec"]
    assert job["completionMode"] == "Indexed"
    assert job["template"]["spec"]["restartPolicy"] == "Never"


def test_gpu_pods_name_the_runtime_class_when_given() -> None:
    """Issue 18 case 6: the pods name the GPU Operator's RuntimeClass instead of relying on containerd's
    default runtime (which k3s can revert)."""
    document = runtime_document(job_args(), runtime_class="nvidia")
    assert round_trip(TrainerV1alpha1TrainingRuntime, document) == document
    pod = document["spec"]["template"]["spec"]["replicatedJobs"][0]["template"]["spec"]["template"]["spec"]
    assert pod["runtimeClassName"] == "nvidia"
    plain = runtime_document(job_args(gpus_per_node=0))
    assert "runtimeClassName" not in str(plain)


def test_runtime_restarts_the_jobset_and_runs_pods_safely() -> None:
    document = runtime_document(job_args())
    assert round_trip(TrainerV1alpha1TrainingRuntime, document) == document
    jobset = document["spec"]["template"]["spec"]
    assert jobset["failurePolicy"]["maxRestarts"] == 5
    actions = {rule["name"]: rule["action"] for rule in jobset["failurePolicy"]["rules"]}
    assert actions == {"usage": "FailJobSet", "preemption": "RestartJobSetAndIgnoreMaxRestarts"}
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


# A failed pod of the job, as Kubernetes 1.33's Job controller reports it on the Job's Failed condition
# (pkg/controller/job/pod_failure_policy.go matchPodFailurePolicy; job_controller.go): (reason, message).
POD = "trainstack/gpt-node-0-1-x7k2p"


def job_failure(pod_rules: list[dict[str, Any]], exit_code: int, disrupted: bool) -> tuple[str, str]:
    """The first podFailurePolicy rule the pod matches, as the Job controller evaluates them (exit codes of the
    named container other than 0, or a pod condition); no FailJob match: backoffLimit 0 is exceeded."""
    for index, rule in enumerate(pod_rules):
        assert rule["action"] == "FailJob"
        codes = rule.get("onExitCodes")
        if codes is not None:
            listed = exit_code in codes["values"]
            if codes["containerName"] == "node" and exit_code != 0 and listed == (codes["operator"] == "In"):
                return (
                    "PodFailurePolicy",
                    f"Container node for pod {POD} failed with exit code {exit_code} matching FailJob rule"
                    f" at index {index}",
                )
        elif disrupted and {"type": "DisruptionTarget", "status": "True"} in rule["onPodConditions"]:
            return (
                "PodFailurePolicy",
                f"Pod {POD} has condition DisruptionTarget matching FailJob rule at index {index}",
            )
    return "BackoffLimitExceeded", "Job has reached the specified backoff limit"


def jobset_action(failure_policy: dict[str, Any], reason: str, message: str) -> str:
    """JobSet v0.12.0's choice (pkg/controllers/failure_policy.go ruleIsApplicable): the first rule whose
    reasons (empty: any) hold the reason and one of whose patterns (empty: any) is found in the message;
    none: RestartJobSet. Go's regexp.MatchString searches like re.search."""
    for rule in failure_policy["rules"]:
        reasons = rule.get("onJobFailureReasons", [])
        patterns = rule.get("onJobFailureMessagePatterns", [])
        if (not reasons or reason in reasons) and (
            not patterns or any(re.search(pattern, message) for pattern in patterns)
        ):
            return str(rule["action"])
    return "RestartJobSet"


@pytest.mark.parametrize(
    ("exit_code", "disrupted", "action"),
    [
        (2, False, "FailJobSet"),  # bad config: every restart would fail the same way
        (PREEMPTED_EXIT_CODE, False, "RestartJobSetAndIgnoreMaxRestarts"),
        (2, True, "RestartJobSetAndIgnoreMaxRestarts"),  # disrupted: restart, whatever the code
        (PREEMPTED_EXIT_CODE, True, "RestartJobSetAndIgnoreMaxRestarts"),
        (1, False, "RestartJobSet"),  # a crash: counted against maxRestarts
        (20, False, "RestartJobSet"),
        (137, False, "RestartJobSet"),
    ],
)
def test_exit_2_fails_the_jobset_and_only_exit_2(exit_code: int, disrupted: bool, action: str) -> None:
    """ckpt's note: a trainer exit 2 (bad config, a resize the checkpoint cannot follow) was restarted by
    JobSet until maxRestarts ran out. Its pod failure rule and the JobSet rule "usage" ahead of the
    preemption rule now fail the JobSet, and nothing else does."""
    jobset = runtime_document(job_args())["spec"]["template"]["spec"]
    pod_rules = jobset["replicatedJobs"][0]["template"]["spec"]["podFailurePolicy"]["rules"]
    reason, message = job_failure(pod_rules, exit_code, disrupted)
    assert jobset_action(jobset["failurePolicy"], reason, message) == action


def test_usage_pattern_matches_the_message_kubernetes_writes() -> None:
    """Literal messages in Kubernetes 1.33's format, so a pattern drifting from it fails here."""
    (pattern,) = next(
        rule["onJobFailureMessagePatterns"]
        for rule in runtime_document(job_args())["spec"]["template"]["spec"]["failurePolicy"]["rules"]
        if rule["action"] == "FailJobSet"
    )
    stem = "Container node for pod trainstack/gpt-train-node-0-0-4kqzm failed with exit code"
    assert re.search(pattern, f"{stem} 2 matching FailJob rule at index 2")
    for other in (
        f"{stem} 75 matching FailJob rule at index 1",
        f"{stem} 20 matching FailJob rule at index 2",
        f"{stem} 2 matching Count rule at index 2",
        "Container sidecar for pod trainstack/gpt-train-node-0-0-4kqzm failed with exit code 2 matching FailJob"
        " rule at index 2",
        "Pod trainstack/gpt-train-node-0-0-4kqzm has condition DisruptionTarget matching FailJob rule at index 0",
    ):
        assert not re.search(pattern, other), other


def test_failure_policies_follow_the_published_schemas() -> None:
    """The JobSet failurePolicy against jobset v0.12.0's schema as Trainer 2.3.0's CRD serves it (rule actions
    are an enum, no unknown field), rule names against JobSet's name rule, and the node Job against
    Kubernetes 1.33's own schema (strict)."""
    jobset = runtime_document(job_args())["spec"]["template"]["spec"]
    schema = yaml.safe_load((SCHEMAS / "jobset_failure_policy.yaml").read_text())
    jsonschema.validate(jobset["failurePolicy"], schema)
    assert unknown_fields(jobset["failurePolicy"], schema) == []
    # jobset v0.12.0 api/jobset/v1alpha2/jobset_types.go, FailurePolicyRule.Name.
    for rule in jobset["failurePolicy"]["rules"]:
        assert re.fullmatch(r"[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?", rule["name"])
    misspelt = {**jobset["failurePolicy"], "rules": [{"name": "usage", "action": "FailJobset"}]}
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(misspelt, schema)
    node_job = jobset["replicatedJobs"][0]["template"]
    kubernetes_validate.validate(
        {
            "apiVersion": "batch/v1",
            "kind": "Job",
            "metadata": {"name": "gpt-node-0"},
            "spec": node_job["spec"],
        },
        KUBERNETES_VERSION,
        strict=True,
    )


def training_job(args: TrainingJobArgs, start_after: list[pulumi.Resource]) -> TrainingJob:
    """The component in namespace `team` with the stack's other inputs stood in for."""
    return TrainingJob(
        "job",
        args,
        namespace="team",
        service_account="trainer",
        image=IMAGE,
        hf_token_secret=None,
        hf_token_key="token",
        image_pull_secret=None,
        kubeconfig=pulumi.Output.secret("kc"),
        start_after=start_after,
    )


@pytest.mark.parametrize(
    ("num_nodes", "mode"), [(1, "ReadWriteOnce"), (1, "ReadWriteMany"), (2, "ReadWriteMany")]
)
def test_component_graph(num_nodes: int, mode: str) -> None:
    store = None if num_nodes == 1 else STORE  # the claim stays with an object store (outputs, token cache)
    args = job_args(num_nodes=num_nodes, checkpoint_access_mode=mode, object_store=store)

    def program() -> None:
        gate = pulumi.CustomResource("test:index:Gate", "gate", {})
        job = training_job(args, start_after=[gate])
        pulumi.export("pods", job.pod_names)
        pulumi.export("job", job.job_name)
        pulumi.export("location", job.checkpoint_location)

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
    assert run.depends_on(runtime, gate) and run.depends_on(claim, gate)  # destroy: the claim before the gate
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
    location = "pvc://team/gpt-checkpoints/gpt/checkpoints" if store is None else STORE.url
    assert reveal(run.outputs["location"]) == location


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


@pytest.mark.parametrize(("grace", "timeout"), [(90, "600s"), (414, "714s"), (3600, "3900s")])
def test_the_trainjob_delete_waits_as_long_as_its_pods_may_save(grace: int, timeout: str) -> None:
    """Deleting (or replacing) the TrainJob waits in the foreground for every pod's SIGTERM checkpoint: the
    delete timeout follows terminationGracePeriodSeconds instead of pulumi-kubernetes' fixed 10 minutes, which
    a long grace period outlasts and leaves a replacement half done (issue 23, case 7)."""
    args = job_args(termination_grace_period_seconds=grace)

    job = evaluate(lambda: training_job(args, start_after=[])).one(
        "kubernetes:trainer.kubeflow.org/v1alpha1:TrainJob"
    )
    assert job.custom_timeouts["delete"] == timeout
    assert (
        trainjob(args)["spec"]["runtimePatches"][0]["trainingRuntimeSpec"]["template"]["spec"][
            "replicatedJobs"
        ][0]["template"]["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
        == grace
    )
