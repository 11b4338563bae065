"""The whole Pulumi program under the mock engine, for every Pulumi.<stack>.yaml in the repository."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from components.settings import StackConfigError
from tests.support.fake_apiserver import JOBSET_CRD_PATH, fake_api_server
from tests.support.k8s_validation import (
    crd_schema,
    is_plain_kubernetes_object,
    unknown_fields,
    validate_custom_object,
    validate_kubernetes_object,
    validate_trainer_object,
)
from tests.support.stack_helpers import (
    STACK_OUTPUTS,
    StackRun,
    contains_secret,
    reveal,
    run_stack,
    stack_config,
    stack_files,
    stack_name,
    stand_ins,
    without_secrets,
)
from trainer.distributed import free_port

STACKS = [stack_name(path) for path in stack_files()]
OUTPUTS = set(STACK_OUTPUTS)
TRAIN_JOB = "kubernetes:trainer.kubeflow.org/v1alpha1:TrainJob"
RELEASE = "kubernetes:helm.sh/v3:Release"
LOCAL_COMMAND = "command:local:Command"
REMOTE_COMMAND = "command:remote:Command"
IMAGE = "docker:index/image:Image"
# The commands that put an unpushed image into the nodes.
DELIVERIES = ("trainer-image-kind-load", "trainer-image-node-import", "trainer-image-k3s-import")
HF_TOKEN = "hf_do_not_leak_0123456789"
REGISTRY_PASSWORD = "registry-password-do-not-leak"


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, StackRun]:
    """Every stack, with stand-ins for what its file names on the user's machine (an SSH key, a cluster)."""
    scratch = tmp_path_factory.mktemp("stand-ins")
    found = {}
    for stack in STACKS:
        with stand_ins(stack, scratch) as local:
            found[stack] = run_stack(stack, local.config, secrets={"hfToken": HF_TOKEN})
    return found


def test_repository_has_a_stack_of_every_cluster_kind() -> None:
    configs = {stack: stack_config(stack) for stack in STACKS}
    assert configs["dev"].get("clusterKind", "kind") == "kind"
    assert configs["gpu"]["clusterKind"] == "k3s" and configs["gpu"]["k3sMode"] == "local"
    assert configs["docker"]["clusterKind"] == "k3s" and configs["docker"]["k3sMode"] == "docker"
    assert any(config.get("k3sMode") == "remote" for config in configs.values())
    assert configs["existing"]["clusterKind"] == "existing"


@pytest.mark.parametrize("stack", STACKS)
def test_the_exported_kubeconfig_s_context_names_the_job_s_namespace(
    runs: dict[str, StackRun], stack: str
) -> None:
    """Issue 25 case 11: kubectl and the Kubeflow SDK looked in `default` (TrainerClient reads the namespace
    from the current context)."""
    kubeconfig = yaml.safe_load(runs[stack].plain_output("kubeconfig"))
    current = next(c for c in kubeconfig["contexts"] if c["name"] == kubeconfig["current-context"])
    assert current["context"]["namespace"] == runs[stack].plain_output("namespace") == "trainstack"


@pytest.mark.parametrize("stack", STACKS)
def test_outputs_have_the_contract_names_and_kubeconfig_is_secret(
    runs: dict[str, StackRun], stack: str
) -> None:
    run = runs[stack]
    assert set(run.outputs) == OUTPUTS
    assert contains_secret(run.outputs["kubeconfig"])
    assert "clusters:" in run.plain_output("kubeconfig")
    for name in OUTPUTS - {"kubeconfig"}:
        assert not contains_secret(run.outputs[name]), name
    config = stack_config(stack)
    assert run.plain_output("trainJobName") == "gpt-train"
    assert len(run.plain_output("podNames")) == config["nodeCount"]
    assert (
        run.plain_output("checkpointLocation")
        == "pvc://trainstack/gpt-train-checkpoints/gpt-train/checkpoints"
    )
    assert "@sha256:" in run.plain_output("image")
    assert f"--stack {stack}" in run.plain_output("logsCommand")
    assert "-l jobset.sigs.k8s.io/jobset-name=gpt-train" in run.plain_output("logsCommand")


@pytest.mark.parametrize("stack", STACKS)
def test_secrets_never_appear_in_plaintext(runs: dict[str, StackRun], stack: str) -> None:
    run = runs[stack]
    for resource in run.resources:
        assert HF_TOKEN not in repr(without_secrets(resource.inputs)), resource.name
    assert HF_TOKEN not in repr(without_secrets(run.outputs))
    token = run.one("kubernetes:core/v1:Secret", "-hf-token")
    assert contains_secret(token.inputs["stringData"])
    assert reveal(token.inputs["stringData"]) == {"token": HF_TOKEN}


def test_a_pushed_image_is_pulled_by_its_registry_digest_and_its_password_stays_secret() -> None:
    push = {
        "imagePush": True,
        "imageRepository": "ghcr.io/acme/trainer",
        "registryServer": "ghcr.io",
        "registryUsername": "bot",
    }
    run = run_stack("dev", push, secrets={"registryPassword": REGISTRY_PASSWORD})
    image = run.one(IMAGE, "trainer-image")
    assert image.inputs["skipPush"] is False
    assert contains_secret(image.inputs["registry"])
    assert reveal(image.inputs["registry"]) == {
        "server": "ghcr.io",
        "username": "bot",
        "password": REGISTRY_PASSWORD,
    }
    for resource in run.resources:
        assert REGISTRY_PASSWORD not in repr(without_secrets(resource.inputs)), resource.name
    assert REGISTRY_PASSWORD not in repr(without_secrets(run.outputs))
    # Pulled from the registry: nothing is loaded into the nodes, and the job names the pushed digest.
    assert not [r.name for r in run.of_type(LOCAL_COMMAND) if r.name.startswith("trainer-image-kind")]
    pinned = run.plain_output("image")
    assert pinned.startswith("ghcr.io/acme/trainer@sha256:")
    container = run.one(TRAIN_JOB).plain["spec"]["trainer"]
    assert container["image"] == pinned


@pytest.mark.parametrize("stack", STACKS)
def test_every_kubernetes_resource_uses_the_cluster_provider(runs: dict[str, StackRun], stack: str) -> None:
    run = runs[stack]
    provider = run.one("pulumi:providers:kubernetes")
    if stack == "existing":
        # kubeconfigPath: the provider reads the file when it starts, destroy included (issue 23, case 9).
        assert provider.inputs["kubeconfig"].startswith("/") and provider.inputs["context"]
        assert "token" not in provider.inputs["kubeconfig"]
    else:
        assert contains_secret(provider.inputs["kubeconfig"])
    kubernetes = [r for r in run.resources if r.custom and r.type.startswith("kubernetes:")]
    assert kubernetes
    for resource in kubernetes:
        assert run.provider_urn(resource) == provider.urn, resource.name


@pytest.mark.parametrize("stack", STACKS)
def test_train_job_waits_for_trainer_image_and_gpu_operator(runs: dict[str, StackRun], stack: str) -> None:
    run = runs[stack]
    job = run.one(TRAIN_JOB)
    trainer = run.one(RELEASE, "kubeflow-trainer")
    assert run.depends_on(job, trainer)
    assert run.depends_on(job, run.one(LOCAL_COMMAND, "kubeflow-trainer-ready"))
    assert run.depends_on(job, run.one(IMAGE, "trainer-image"))
    for delivery in [r for r in run.resources if "trainer-image-" in r.name and r.type == LOCAL_COMMAND]:
        assert run.depends_on(job, delivery)
    gpu_operators = [r for r in run.of_type(RELEASE) if r.name == "gpu-operator"]
    if stack_config(stack).get("gpusPerNode", 0):
        assert len(gpu_operators) == 1 and run.depends_on(job, gpu_operators[0])
    else:
        assert gpu_operators == []
    pods = run.one(LOCAL_COMMAND, "training-pods")
    assert run.depends_on(pods, job)
    # destroy deletes the claim (waiting for the pods) before the Trainer and its CRDs: the garbage collector
    # cannot remove a JobSet's Jobs once the JobSet kind is gone, and their pods would hold the claim for good
    claim = run.one("kubernetes:core/v1:PersistentVolumeClaim", "training-checkpoints")
    assert run.depends_on(claim, trainer) and run.depends_on(
        claim, run.one(LOCAL_COMMAND, "kubeflow-trainer-crds")
    )


@pytest.mark.parametrize("stack", STACKS)
def test_the_image_build_waits_for_nothing_and_its_delivery_runs_beside_the_installs(
    runs: dict[str, StackRun], stack: str
) -> None:
    """The build needs no cluster (it runs while the cluster is made); the delivery waits for the cluster only,
    not for the Trainer or GPU Operator installs; a pushed image is pre-pulled on the nodes the job may use."""
    run = runs[stack]
    image = run.one(IMAGE, "trainer-image")
    assert image.dependencies == []
    nodes = [
        r for r in run.of_type(LOCAL_COMMAND) + run.of_type(REMOTE_COMMAND) if r.name.startswith("cluster-")
    ]
    installs = run.of_type(RELEASE)
    deliveries = [r for r in run.of_type(LOCAL_COMMAND) if r.name.startswith(DELIVERIES)]
    for delivery in deliveries:
        assert run.depends_on(delivery, image) and all(run.depends_on(delivery, node) for node in nodes)
        # Not the Trainer's install; the GPU Operator's, yes: its toolkit restarts the nodes' containerd, which
        # an import into it must not race (issue 23 case 5, tests/test_main_gpu.py).
        others = [install for install in installs if install.name != "gpu-operator"]
        assert not any(run.depends_on(delivery, install) for install in others), delivery.name
    prepulls = run.of_type("kubernetes:apps/v1:DaemonSet")
    job = run.one(TRAIN_JOB)
    if stack_config(stack).get("clusterKind") == "existing":  # pushed: the nodes pull it
        assert deliveries == [] and len(prepulls) == 1
        prepull = prepulls[0]
        assert run.depends_on(prepull, image) and not any(run.depends_on(prepull, i) for i in installs)
        spec = prepull.plain["spec"]["template"]["spec"]
        assert spec["containers"][0]["image"] == job.plain["spec"]["trainer"]["image"]
        assert spec["containers"][0]["securityContext"]["allowPrivilegeEscalation"] is False
        assert spec["securityContext"]["runAsNonRoot"] is True
        # Created, not awaited: the job (which waits for the image's component) joins a pull still running.
        assert prepull.plain["metadata"]["annotations"] == {"pulumi.com/skipAwait": "true"}
    else:
        assert deliveries and prepulls == []


@pytest.mark.parametrize("stack", STACKS)
def test_cluster_matches_the_stack(runs: dict[str, StackRun], stack: str) -> None:
    run = runs[stack]
    config = stack_config(stack)
    commands = {r.name: r for r in run.of_type(LOCAL_COMMAND) + run.of_type(REMOTE_COMMAND)}
    provider = run.one("pulumi:providers:kubernetes")
    if config.get("clusterKind", "kind") == "kind":
        assert "kind create cluster" in commands["cluster-kind"].inputs["create"]
        assert "kind delete cluster" in commands["cluster-kind"].inputs["delete"]
        assert "trainer-image-kind-load" in commands
        assert run.depends_on(provider, commands["cluster-kind"])
    elif config["clusterKind"] == "existing":
        # Nothing of the cluster is created: the provider reads the user's kubeconfigPath file, with its
        # context, whenever it runs; the stack's output is the reduced form.
        assert not [name for name in commands if name.startswith("cluster-")]
        assert provider.dependencies == []
        assert (Path(provider.inputs["kubeconfig"]).is_file(), provider.inputs["context"]) == (True, "fake")
        kubeconfig = yaml.safe_load(reveal(run.outputs["kubeconfig"]))
        assert kubeconfig["current-context"] == "fake" and len(kubeconfig["clusters"]) == 1
        for name in ("kubeflow-trainer-ready", "kubeflow-trainer-crds", "training-pods"):
            environment = reveal(commands[name].inputs["environment"])
            assert "TRAINSTACK_KUBECONFIG" not in environment, name
            assert environment["TRAINSTACK_KUBECONFIG_PATH"] == provider.inputs["kubeconfig"], name
        # No delivery into nodes: the image is pushed and pulled by digest.
        assert run.one(IMAGE, "trainer-image").plain.get("skipPush", False) is False
        deliveries = ("trainer-image-kind-load", "trainer-image-node-import", "trainer-image-k3s-import")
        assert not [name for name in commands if name.startswith(deliveries)]
        assert run.plain_output("image").startswith("registry.example.com/trainstack/trainer@sha256:")
    elif config["k3sMode"] == "local":
        assert commands["cluster-k3s-server"].inputs["environment"]["INSTALL_K3S_VERSION"] == "v1.33.6+k3s1"
        assert "k3s-uninstall.sh" in commands["cluster-k3s-server"].inputs["delete"]
        assert "trainer-image-k3s-import" in commands
    elif config["k3sMode"] == "docker":
        create = commands["cluster-k3s-docker"]
        # The default node image is the official tag of the pinned k3s version.
        assert create.inputs["environment"]["NODE_IMAGE"] == "rancher/k3s:v1.33.6-k3s1"
        assert run.depends_on(provider, create)
        assert run.depends_on(commands["trainer-image-node-import"], run.one(IMAGE, "trainer-image"))
        # Several nodes and no StorageClass named: the stack's shared volume, pre-bound to the claim.
        assert create.inputs["environment"]["SHARED"] == str(int(config["nodeCount"] > 1))
        volume = run.one("kubernetes:core/v1:PersistentVolume").plain
        assert volume["spec"]["accessModes"] == ["ReadWriteMany"]
        assert volume["spec"]["claimRef"]["name"] == "gpt-train-checkpoints"
        claim = run.one("kubernetes:core/v1:PersistentVolumeClaim").plain
        assert claim["spec"]["volumeName"] == volume["metadata"]["name"]
    else:
        agents = [r for name, r in commands.items() if name.startswith("cluster-k3s-agent-")]
        assert len(agents) == len(config["k3sAgentHosts"])
        for agent in agents:
            assert run.depends_on(agent, commands["cluster-k3s-token"])
            assert contains_secret(agent.inputs["stdin"])
            assert run.depends_on(provider, agent)
        imports = [name for name in commands if name.startswith("trainer-image-k3s-import-")]
        assert len(imports) == 1 + len(config["k3sAgentHosts"])


@pytest.mark.parametrize("stack", STACKS)
def test_trainer_release_is_pinned_and_patched_only_on_k3s(runs: dict[str, StackRun], stack: str) -> None:
    release = runs[stack].one(RELEASE, "kubeflow-trainer").plain
    assert release["chart"] == "oci://ghcr.io/kubeflow/charts/kubeflow-trainer"
    assert release["version"] == "2.3.0"
    # TrainJobStatus (trainJobProgress, on by default): pods report progress into status.trainerStatus.
    assert release["values"] == {
        "runtimes": {"defaultEnabled": False},
        "manager": {"config": {"featureGates": {"TrainJobStatus": True}}},
    }
    on_k3s = stack_config(stack).get("clusterKind") == "k3s"
    assert ("postrender" in release) == on_k3s


@pytest.mark.parametrize("stack", STACKS)
def test_kubernetes_objects_pass_strict_openapi_validation(runs: dict[str, StackRun], stack: str) -> None:
    objects = [r for r in runs[stack].resources if is_plain_kubernetes_object(r)]
    assert {r.type.rsplit(":", 1)[1] for r in objects} >= {
        "Namespace",
        "ServiceAccount",
        "Role",
        "RoleBinding",
        "Secret",
        "PersistentVolumeClaim",
        "ConfigMap",
    }
    for registration in objects:
        validate_kubernetes_object(registration)


@pytest.mark.parametrize("stack", STACKS)
def test_trainer_objects_match_the_kubeflow_api(runs: dict[str, StackRun], stack: str) -> None:
    run = runs[stack]
    job = validate_trainer_object(run.one(TRAIN_JOB))
    runtime = validate_trainer_object(run.one("kubernetes:trainer.kubeflow.org/v1alpha1:TrainingRuntime"))
    assert job["spec"]["runtimeRef"]["name"] == runtime["metadata"]["name"]
    assert job["spec"]["trainer"]["numNodes"] == stack_config(stack)["nodeCount"]


@pytest.mark.parametrize("stack", STACKS)
def test_gpu_pods_name_the_operators_runtime_class(runs: dict[str, StackRun], stack: str) -> None:
    """Issue 18 case 6: where the GPU Operator is installed the training pods name its RuntimeClass, and the
    runtime states what JobSet's (possibly skipped) webhook would default."""
    runtime = validate_trainer_object(
        runs[stack].one("kubernetes:trainer.kubeflow.org/v1alpha1:TrainingRuntime")
    )
    job = runtime["spec"]["template"]["spec"]["replicatedJobs"][0]["template"]["spec"]
    assert job["completionMode"] == "Indexed"
    expected = "nvidia" if stack_config(stack).get("gpusPerNode", 0) else None
    assert job["template"]["spec"].get("runtimeClassName") == expected


# Each bad value, the key its error must name, and a piece of the allowed values it must state.
BAD_CONFIGS = [
    ({"clusterKind": "eks"}, "trainstack:clusterKind", "kind, k3s"),
    ({"nodeCount": 0}, "trainstack:nodeCount", ">= 1"),
    ({"nodeCount": "two"}, "trainstack:nodeCount", "integer"),
    ({"gpusPerNode": -1}, "trainstack:gpusPerNode", ">= 0"),
    ({"clusterKind": "k3s", "k3sMode": "cloud"}, "trainstack:k3sMode", "local, remote"),
    ({"clusterKind": "k3s", "k3sMode": "remote"}, "trainstack:k3sServerHost", "host name or IP"),
    (
        {
            "clusterKind": "k3s",
            "k3sMode": "remote",
            "k3sServerHost": "192.0.2.1",
            "sshPrivateKeyPath": "/nonexistent/key",
        },
        "trainstack:sshPrivateKeyPath",
        "existing private key file",
    ),
    ({"clusterKind": "k3s", "nodeCount": 2}, "trainstack:nodeCount", "must be 1 when k3sMode is local"),
    ({"clusterKind": "k3s", "k3sMode": "cloud"}, "trainstack:k3sMode", "local, remote, docker"),
    (
        {"clusterKind": "k3s", "k3sMode": "docker", "gpusPerNode": 1},
        "trainstack:gpusPerNode",
        "must be 0 when k3sMode is docker",
    ),
    (
        {"clusterKind": "k3s", "k3sMode": "docker", "k3sAirgapImages": "/nonexistent/images"},
        "trainstack:k3sAirgapImages",
        "existing directory of image archives",
    ),
    (
        {"trainerChart": "/nonexistent/chart"},
        "trainstack:trainerChart",
        "oci:// reference, a chart repository URL",
    ),
    ({"trainerChartValues": "[1, 2]"}, "trainstack:trainerChartValues", "mapping of chart values"),
    ({"trainerChartValues": "{a: [}"}, "trainstack:trainerChartValues", "mapping of chart values"),
    ({"imageBuildArgs": ["no-equals"]}, "trainstack:imageBuildArgs", "NAME=value"),
    (
        {"baseImage": "a", "imageBuildArgs": ["BASE_IMAGE=b"]},
        "trainstack:baseImage",
        "may not both be set",
    ),
    ({"trainingPreset": "huge"}, "trainstack:trainingPreset", "gpt2-124m, tiny"),
    (
        {"trainingOverrides": ["train.max_steps=0"]},
        "trainstack:trainingOverrides",
        "train.max_steps: must be > 0",
    ),
    (
        {"trainingOverrides": ["checkpoint.dir=/tmp"]},
        "trainstack:trainingOverrides",
        "may not set checkpoint.dir",
    ),
    ({"gpuTimeSlicingReplicas": 1}, "trainstack:gpuTimeSlicingReplicas", "0 (off) or >= 2"),
    ({"memoryPerNode": "lots"}, "trainstack:memoryPerNode", "Kubernetes quantity"),
    ({"trainJobName": "GPT_Train"}, "trainstack:trainJobName", "DNS-1123 label"),
    ({"imagePush": True}, "trainstack:imageRepository", "registry host"),
    ({"hostHasGpuDriver": "maybe"}, "trainstack:hostHasGpuDriver", "true or false"),
    ({"clusterKnd": "kind"}, "trainstack:clusterKnd", "allowed keys: baseImage"),
    ({"terminationGracePeriodSeconds": 5}, "trainstack:terminationGracePeriodSeconds", "at least 20"),
    (
        {"checkpointS3Url": "s3://b/x", "checkpointS3Secret": "k"},
        "trainstack:checkpointS3Url",
        "s3://bucket/prefix",
    ),
    ({"checkpointS3Url": "s3://team/x"}, "trainstack:checkpointS3Secret", "AWS_ACCESS_KEY_ID"),
]


@pytest.mark.parametrize(("overrides", "key", "allowed"), BAD_CONFIGS)
def test_bad_config_fails_with_one_clear_error_before_any_resource(
    overrides: dict[str, Any], key: str, allowed: str
) -> None:
    run = StackRun()
    with pytest.raises(StackConfigError) as raised:
        run_stack("dev", overrides, run=run)
    message = str(raised.value)
    assert message.startswith(f"{key}: ")
    assert allowed in message
    assert run.resources == []


def test_a_local_trainer_chart_must_hold_the_pinned_release(tmp_path: Path) -> None:
    chart = tmp_path / "kubeflow-trainer"
    chart.mkdir()
    (chart / "Chart.yaml").write_text("name: kubeflow-trainer\nversion: 2.2.0\n")
    with pytest.raises(
        StackConfigError, match=r"must hold kubeflow-trainer version 2.3.0 .* has kubeflow-trainer 2.2.0"
    ):
        run_stack("dev", {"trainerChart": str(chart)})
    (chart / "Chart.yaml").write_text("name: kubeflow-trainer\nversion: 2.3.0\n")
    release = run_stack("dev", {"trainerChart": str(chart)}).one(RELEASE, "kubeflow-trainer").plain
    assert release["chart"] == str(chart) and "version" not in release


# The observability and scheduling keys: each bad value, the key named, what is allowed.
BAD_OBSERVABILITY_CONFIGS = [
    ({"metricsPort": 70000}, "trainstack:metricsPort", "between 1 and 65535"),
    ({"metricsPort": -1}, "trainstack:metricsPort", "0 (off) or a port number between 1 and 65535, got -1"),
    (
        {"metricsPort": 0, "prometheusPodMonitor": True},
        "trainstack:prometheusPodMonitor",
        "needs metricsPort > 0",
    ),
    ({"prometheusPodMonitor": "yes"}, "trainstack:prometheusPodMonitor", "true or false"),
    ({"trainJobProgress": "maybe"}, "trainstack:trainJobProgress", "true or false"),
    ({"mlflowServer": "sure"}, "trainstack:mlflowServer", "true or false"),
    (
        {"mlflowServer": True, "mlflowStorageSize": "lots"},
        "trainstack:mlflowStorageSize",
        "Kubernetes quantity",
    ),
    ({"trainingOverrides": ["output.metrics_port=9"]}, "trainstack:trainingOverrides", "from metricsPort"),
    (
        {"mlflowServer": True, "trainingOverrides": ["output.tracking_uri=http://x:5000"]},
        "trainstack:trainingOverrides",
        "may not set output.tracking_uri: the stack sets it from mlflowServer",
    ),
    (
        {"trainingOverrides": ["train.stop_at=accuracy>0.9"]},
        "trainstack:trainingOverrides",
        "train.stop_at: unknown metric 'accuracy'",
    ),
    (
        {"priorityClassValue": 2000000000},
        "trainstack:priorityClassValue",
        "between -2147483648 and 1000000000",
    ),
    ({"priorityClassValue": "high"}, "trainstack:priorityClassValue", "integer"),
    ({"priorityClassName": "Batch_Low"}, "trainstack:priorityClassName", "DNS-1123 label"),
    (
        {"priorityClassName": "system-x", "priorityClassValue": 5},
        "trainstack:priorityClassName",
        "must not start with 'system-'",
    ),
    (
        {"priorityPreemptionPolicy": "Sometimes"},
        "trainstack:priorityPreemptionPolicy",
        "PreemptLowerPriority, Never",
    ),
    ({"priorityPreemptionPolicy": "Never"}, "trainstack:priorityPreemptionPolicy", "priorityClassValue != 0"),
]


@pytest.mark.parametrize(("overrides", "key", "allowed"), BAD_OBSERVABILITY_CONFIGS)
def test_bad_observability_and_priority_config_fails_before_any_resource(
    overrides: dict[str, Any], key: str, allowed: str
) -> None:
    test_bad_config_fails_with_one_clear_error_before_any_resource(overrides, key, allowed)


def _training_config(run: StackRun) -> dict[str, Any]:
    config_map = run.one("kubernetes:core/v1:ConfigMap", "training-config").plain
    return yaml.safe_load(config_map["data"]["train.yaml"])


def _runtime_pod(run: StackRun) -> dict[str, Any]:
    runtime = run.one("kubernetes:trainer.kubeflow.org/v1alpha1:TrainingRuntime").plain
    return runtime["spec"]["template"]["spec"]["replicatedJobs"][0]["template"]["spec"]["template"]["spec"]


@pytest.mark.parametrize("stack", STACKS)
def test_rank_0_metrics_are_exposed_by_a_service(runs: dict[str, StackRun], stack: str) -> None:
    run = runs[stack]
    assert _training_config(run)["output"]["metrics_port"] == 8000
    assert _runtime_pod(run)["containers"][0]["ports"] == [
        {"name": "metrics", "containerPort": 8000, "protocol": "TCP"}
    ]
    service = run.one("kubernetes:core/v1:Service", "monitoring-service").plain
    assert service["metadata"]["name"] == "gpt-train-metrics"
    assert service["spec"]["ports"] == [{"name": "metrics", "port": 8000, "targetPort": "metrics"}]
    # Rank 0 only: the node-rank-0 pod of this job (Trainer makes the completion index PET_NODE_RANK).
    assert service["spec"]["selector"] == {
        "jobset.sigs.k8s.io/jobset-name": "gpt-train",
        "batch.kubernetes.io/job-completion-index": "0",
    }
    assert not run.of_type("kubernetes:monitoring.coreos.com/v1:PodMonitor")
    assert not run.of_type("kubernetes:apps/v1:Deployment")  # no MLflow server unless asked
    assert "priorityClassName" not in _runtime_pod(run)


def test_metrics_port_0_exposes_nothing() -> None:
    run = run_stack("dev", {"metricsPort": 0})
    assert (
        "metrics_port" not in _training_config(run)["output"]
        or _training_config(run)["output"]["metrics_port"] is None
    )
    assert "ports" not in _runtime_pod(run)["containers"][0]
    assert not [r for r in run.of_type("kubernetes:core/v1:Service") if r.name.startswith("monitoring")]


def test_trainjob_progress_off_leaves_the_trainer_chart_alone() -> None:
    release = run_stack("dev", {"trainJobProgress": False}).one(RELEASE, "kubeflow-trainer").plain
    assert release["values"] == {"runtimes": {"defaultEnabled": False}}


@pytest.fixture(scope="module")
def full_run() -> StackRun:
    """dev with every optional object: MLflow server, PodMonitor, a PriorityClass the stack creates."""
    return run_stack(
        "dev",
        {
            "mlflowServer": True,
            "prometheusPodMonitor": True,
            "priorityClassValue": -10,
            "priorityPreemptionPolicy": "Never",
            "trainingOverrides": ["train.stop_at=loss<=2.5"],
        },
    )


def test_optional_objects_pass_their_schemas(full_run: StackRun) -> None:
    kinds = {r.type.rsplit(":", 1)[1] for r in full_run.resources if is_plain_kubernetes_object(r)}
    assert kinds >= {"Deployment", "PriorityClass", "Service", "PersistentVolumeClaim"}
    for registration in full_run.resources:
        if is_plain_kubernetes_object(registration):
            validate_kubernetes_object(registration)
    monitor = validate_custom_object(full_run.one("kubernetes:monitoring.coreos.com/v1:PodMonitor"))
    misspelt = {"spec": {"podMetricEndpoints": [{"port": "metrics"}]}}
    assert unknown_fields(misspelt, crd_schema("monitoring.coreos.com/v1", "PodMonitor")) == [
        ".spec.podMetricEndpoints"
    ]
    assert monitor["spec"]["podMetricsEndpoints"] == [
        {"port": "metrics", "path": "/metrics", "interval": "30s"}
    ]
    assert monitor["spec"]["selector"]["matchLabels"]["batch.kubernetes.io/job-completion-index"] == "0"
    validate_trainer_object(full_run.one(TRAIN_JOB))


def test_mlflow_server_serves_the_job_from_the_trainer_image(full_run: StackRun) -> None:
    deployment = full_run.one("kubernetes:apps/v1:Deployment", "mlflow-deployment")
    pod = deployment.plain["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert (
        container["image"] == full_run.one(TRAIN_JOB).plain["spec"]["trainer"]["image"]
    )  # the trainer image
    assert container["command"][:4] == ["python", "-m", "mlflow", "server"]
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["volumes"][0]["persistentVolumeClaim"]["claimName"] == "mlflow-data"
    config = _training_config(full_run)["output"]
    assert (config["tracking"], config["tracking_uri"]) == (
        "mlflow",
        "http://mlflow.trainstack.svc.cluster.local:5000",
    )
    # The job starts only once the server's rollout is done.
    assert full_run.depends_on(full_run.one(TRAIN_JOB), deployment)
    assert _training_config(full_run)["train"]["stop_at"] == "loss<=2.5"


def test_priority_class_is_created_and_used(full_run: StackRun) -> None:
    priority = full_run.one("kubernetes:scheduling.k8s.io/v1:PriorityClass").plain
    assert priority["metadata"]["name"] == "trainstack-gpt-train"
    assert (priority["value"], priority["preemptionPolicy"], priority["globalDefault"]) == (
        -10,
        "Never",
        False,
    )
    assert _runtime_pod(full_run)["priorityClassName"] == "trainstack-gpt-train"
    runtime = full_run.one("kubernetes:trainer.kubeflow.org/v1alpha1:TrainingRuntime")
    assert full_run.depends_on(runtime, full_run.one("kubernetes:scheduling.k8s.io/v1:PriorityClass"))


def test_an_existing_priority_class_is_only_named() -> None:
    run = run_stack("dev", {"priorityClassName": "batch-low"})
    assert not run.of_type("kubernetes:scheduling.k8s.io/v1:PriorityClass")
    assert _runtime_pod(run)["priorityClassName"] == "batch-low"


def test_an_existing_cluster_s_kubeconfig_may_come_as_a_secret(tmp_path: Path) -> None:
    with fake_api_server() as server:
        run = run_stack("existing", {"kubeconfigPath": ""}, secrets={"kubeconfig": server.kubeconfig()})
    provider = run.one("pulumi:providers:kubernetes")
    assert contains_secret(provider.inputs["kubeconfig"])
    assert (
        yaml.safe_load(reveal(provider.inputs["kubeconfig"]))["clusters"][0]["cluster"]["server"]
        == server.url
    )
    assert server.requests == [("/version", "token"), (JOBSET_CRD_PATH, "token")]


def _unreachable_url() -> str:
    return f"https://127.0.0.1:{free_port()}"


# Each bad value for an existing cluster: overrides (with {kubeconfig} for a kubeconfig file of the fake
# server, {unreachable} for one whose server is a closed port), secrets, the key named and the problem.
EXISTING_BAD_CONFIGS: list[tuple[dict[str, Any], dict[str, str], str, str]] = [
    ({"kubeconfigPath": ""}, {}, "trainstack:kubeconfigPath", "must name a kubeconfig file"),
    ({"kubeconfigPath": "{unreachable}"}, {}, "trainstack:kubeconfigPath", "cannot be reached"),
    ({"kubeContext": "nope"}, {}, "trainstack:kubeContext", "context 'nope' is not in the kubeconfig"),
    (
        {"imagePush": False},
        {},
        "trainstack:imagePush",
        "must be true when clusterKind is existing: the cluster pulls the image from imageRepository"
        " (the stack loads images only into nodes it created), got false",
    ),
    (
        {"checkpointStorageClass": ""},
        {},
        "trainstack:checkpointStorageClass",
        "must name a ReadWriteMany StorageClass of the cluster when clusterKind is existing and nodeCount > 1",
    ),
    ({"kubeconfigPath": "", "kubeconfig": "{kubeconfig}"}, {}, "trainstack:kubeconfig", "must be a secret"),
    (
        {"kubeconfigPath": ""},
        {"kubeconfig": "{stale}"},
        "trainstack:kubeconfig",
        "rejects the credentials of user 'fake-user' (HTTP 401 Unauthorized)",
    ),
]


@pytest.mark.parametrize(("overrides", "secrets", "key", "problem"), EXISTING_BAD_CONFIGS)
def test_a_bad_existing_cluster_stops_with_one_line_before_any_resource(
    tmp_path: Path, overrides: dict[str, Any], secrets: dict[str, str], key: str, problem: str
) -> None:
    with fake_api_server() as server:
        texts = {
            "{kubeconfig}": server.kubeconfig(),
            "{stale}": server.kubeconfig(user={"token": "stale"}),
            "{unreachable}": server.kubeconfig(cluster={"server": _unreachable_url()}),
        }

        def fill(key: str, value: Any) -> Any:
            """A placeholder as the key takes it: kubeconfigPath a file, kubeconfig the text."""
            if value not in texts:
                return value
            if key != "kubeconfigPath":
                return texts[value]
            path = tmp_path / f"{value.strip('{}')}.yaml"
            path.write_text(texts[value])
            return str(path)

        config = {
            key: fill(key, value) for key, value in {"kubeconfigPath": "{kubeconfig}", **overrides}.items()
        }
        run = StackRun()
        with pytest.raises(StackConfigError) as raised:
            run_stack("existing", config, {key: fill(key, value) for key, value in secrets.items()}, run=run)
    message = str(raised.value)
    assert message.startswith(f"{key}: ") and problem in message and "\n" not in message
    assert run.resources == []


def test_checkpoints_in_an_object_store_reach_the_job_and_the_output() -> None:
    """checkpointS3Url: the training config, the TrainJob's credentials by secretKeyRef (validated against
    Kubeflow's API and Kubernetes' own schemas), the claim still there for outputs, the output an s3:// URL."""
    run = run_stack(
        "dev",
        {
            "checkpointS3Url": "s3://team-bucket/training",
            "checkpointS3Secret": "s3-credentials",
            "checkpointS3Endpoint": "http://minio.storage.svc:9000",
        },
    )
    url = "s3://team-bucket/training/gpt-train/checkpoints"
    assert run.plain_output("checkpointLocation") == url
    assert _training_config(run)["checkpoint"]["dir"] == url
    job = validate_trainer_object(run.one(TRAIN_JOB))
    env = {item["name"]: item for item in job["spec"]["trainer"]["env"]}
    assert env["AWS_SECRET_ACCESS_KEY"]["valueFrom"] == {
        "secretKeyRef": {"name": "s3-credentials", "key": "AWS_SECRET_ACCESS_KEY"}
    }
    assert env["AWS_ENDPOINT_URL_S3"]["value"] == "http://minio.storage.svc:9000"
    assert run.one("kubernetes:core/v1:PersistentVolumeClaim")  # outputs and the token cache
    for registration in run.resources:
        if is_plain_kubernetes_object(registration):
            validate_kubernetes_object(registration)
    # The stack never holds the credentials: no Secret of its own, the Role reads none of them.
    assert not [r for r in run.of_type("kubernetes:core/v1:Secret") if "s3" in r.name]
    role = run.one("kubernetes:rbac.authorization.k8s.io/v1:Role").plain
    assert all("s3-credentials" not in rule.get("resourceNames", []) for rule in role["rules"])
