"""Stack settings: Pulumi.yaml's declared keys, coercion, defaults and the rules between keys."""

from __future__ import annotations

from pathlib import Path

import pulumi
import pytest
import yaml

from components.checkpoints import ObjectStore
from components.cluster import RemoteHosts
from components.cluster.provider import SHARED_STORAGE_PATH
from components.settings import StackConfigError, declared_keys, resolve_values
from components.stack import load_settings, parse_settings
from components.trainer_image import CPU_BUILD_ARGS, K3sImport, KindLoad
from components.training_job_config import available_presets
from tests.stack_helpers import evaluate, is_secret, reveal


def test_every_declared_key_has_a_type_default_and_description() -> None:
    keys = declared_keys()
    assert {
        "clusterKind",
        "nodeCount",
        "gpusPerNode",
        "trainerVersion",
        "gpuOperatorVersion",
        "k3sVersion",
    } <= set(keys)
    for name, key in keys.items():
        assert key.type in ("string", "integer", "boolean", "array"), name
        assert key.default is not None, name
        assert key.description, name


def test_versions_installed_into_the_cluster_are_pinned() -> None:
    keys = declared_keys()
    assert keys["trainerVersion"].default == "2.3.0"
    assert keys["gpuOperatorVersion"].default == "v25.10.1"
    assert keys["k3sVersion"].default == "v1.33.6+k3s1"
    assert "@sha256:" in keys["kindNodeImage"].default


def test_values_arrive_as_strings_and_are_coerced_to_their_declared_type() -> None:
    values = resolve_values({"nodeCount": "3", "imagePush": "true", "k3sAgentHosts": '["a", "b"]'})
    assert values["nodeCount"] == 3
    assert values["imagePush"] is True
    assert values["k3sAgentHosts"] == ["a", "b"]
    assert values["clusterKind"] == "kind"  # the default


def test_defaults_make_a_cpu_kind_stack() -> None:
    settings = parse_settings({})
    assert settings.cluster.kind == "kind" and settings.cluster.node_count == 1
    assert settings.gpu is None
    assert settings.trainer.ignore_webhook_failures is False
    assert settings.image.delivery == KindLoad("trainstack")
    assert settings.access.config_map == settings.job.config_map


def test_training_config_is_the_preset_with_the_stack_paths() -> None:
    settings = parse_settings({"trainingOverrides": '["train.max_steps=7"]'})
    config = yaml.safe_load(settings.job.train_config)
    assert config["train"]["max_steps"] == 7
    assert config["model"]["preset"] == "tiny"
    assert config["checkpoint"]["dir"] == "/mnt/checkpoints/gpt-train/checkpoints"
    assert config["output"]["dir"] == "/mnt/checkpoints/gpt-train/output"
    assert config["data"]["cache_dir"] == "/mnt/checkpoints/tokens"  # shared by the jobs on the volume
    assert config["data"]["path"] == "trainer/data"  # dataSource's default: the bundled sample


def test_a_new_training_config_gets_a_new_config_map() -> None:
    assert (
        parse_settings({}).job.config_map
        != parse_settings({"trainingOverrides": '["train.max_steps=7"]'}).job.config_map
    )


def test_presets_are_the_trainer_config_files() -> None:
    assert {"tiny", "gpt2-124m"} <= set(available_presets())


def test_gpu_k3s_stack_installs_the_gpu_operator_without_a_driver() -> None:
    settings = parse_settings({"clusterKind": "k3s", "gpusPerNode": "1", "gpuTimeSlicingReplicas": "4"})
    assert settings.gpu is not None and settings.gpu.operator is not None
    assert settings.gpu.operator.cluster_kind == "k3s" and not settings.gpu.operator.install_driver
    assert settings.gpu.operator.time_slicing_replicas == 4
    assert settings.trainer.ignore_webhook_failures is True
    assert settings.image.delivery == K3sImport(None)


def test_remote_k3s_reads_its_hosts(tmp_path: Path) -> None:
    key = tmp_path / "id"
    key.write_text("key")
    settings = parse_settings(
        {
            "clusterKind": "k3s",
            "k3sMode": "remote",
            "k3sServerHost": "192.0.2.1",
            "k3sAgentHosts": '["192.0.2.2"]',
            "sshPrivateKeyPath": str(key),
            "nodeCount": "2",
            "checkpointStorageClass": "nfs-client",
        }
    )
    hosts = RemoteHosts("192.0.2.1", ("192.0.2.2",), "ubuntu", 22, key)
    assert settings.cluster.remote == hosts
    assert settings.image.delivery == K3sImport(hosts)
    assert settings.job.num_nodes == 2


def test_more_nodes_than_remote_hosts_is_an_error(tmp_path: Path) -> None:
    key = tmp_path / "id"
    key.write_text("key")
    with pytest.raises(
        StackConfigError, match=r"^trainstack:nodeCount: must be at most the number of remote hosts"
    ):
        parse_settings(
            {
                "clusterKind": "k3s",
                "k3sMode": "remote",
                "k3sServerHost": "h",
                "sshPrivateKeyPath": str(key),
                "nodeCount": "2",
                "checkpointStorageClass": "nfs",
            }
        )


def test_secrets_pass_through_to_access_and_image() -> None:
    settings = parse_settings(
        {
            "registryServer": "ghcr.io",
            "registryUsername": "bot",
            "imageRepository": "ghcr.io/acme/trainer",
            "imagePush": "true",
        },
        hf_token="hf",
        registry_password="pw",
    )
    assert settings.access.hf_token == "hf"
    assert settings.access.registry is not None and settings.access.registry.password == "pw"
    assert settings.image.registry == settings.access.registry
    assert settings.image.push and settings.image.delivery is None


def test_registry_user_without_password_is_an_error() -> None:
    with pytest.raises(StackConfigError, match=r"^trainstack:registryPassword: must be set"):
        parse_settings({"registryServer": "ghcr.io", "registryUsername": "bot"})


def test_bad_k3s_version_names_the_expected_form() -> None:
    with pytest.raises(
        StackConfigError, match=r"^trainstack:k3sVersion: must be a k3s release such as v1.33.6\+k3s1"
    ):
        parse_settings({"clusterKind": "k3s", "k3sVersion": "latest"})


@pytest.mark.parametrize(
    ("values", "seconds"),
    [
        ({}, 61),  # tiny (0.13M parameters, bytes encoding): the floor
        ({"trainingPreset": "gpt2-124m"}, 89),  # 60 s + 2 saves x 3 x 2.7 s/GB x 1.74 GB
        ({"trainingPreset": "gpt2-124m", "trainingOverrides": '["model.preset=gpt2-1558m"]'}, 414),
        ({"trainingPreset": "gpt2-124m", "terminationGracePeriodSeconds": "600"}, 600),
    ],
)
def test_grace_period_is_set_or_derived_from_the_model_size(values: dict[str, str], seconds: int) -> None:
    assert parse_settings(values).job.termination_grace_period_seconds == seconds


@pytest.mark.parametrize("value", ["10", "-5"])
def test_a_grace_period_too_short_for_a_save_is_an_error(value: str) -> None:
    with pytest.raises(StackConfigError, match=r"^trainstack:terminationGracePeriodSeconds: must be"):
        parse_settings({"terminationGracePeriodSeconds": value})


def test_an_existing_cluster_is_reached_through_its_kubeconfig_and_pulls_the_pushed_image(
    tmp_path: Path,
) -> None:
    from tests.fake_apiserver import JOBSET_CRD_PATH, fake_api_server

    with fake_api_server() as server:
        kubeconfig = tmp_path / "config"
        kubeconfig.write_text(server.kubeconfig())
        settings = parse_settings(
            {
                "clusterKind": "existing",
                "kubeconfigPath": str(kubeconfig),
                "imagePush": "true",
                "imageRepository": "registry.example.com/trainer",
                "nodeCount": "2",
                "checkpointStorageClass": "nfs-client",
            }
        )
        assert server.requests == [("/version", "token"), (JOBSET_CRD_PATH, "token")]  # before any resource
    assert settings.cluster.existing is not None and settings.cluster.existing.context == "fake"
    assert not settings.cluster.shared_storage and settings.job.checkpoint_storage_class == "nfs-client"
    assert settings.image.push and settings.image.delivery is None
    assert settings.trainer.ignore_webhook_failures is False and settings.gpu is None


UPSTREAM_JOBSET = Path(__file__).resolve().parents[1] / "upstream" / "jobset"


@pytest.mark.parametrize(("release", "refused"), [("v0.12.0", False), ("v0.10.0", True)])
def test_an_existing_cluster_with_an_older_jobset_crd_is_refused_before_anything_is_created(
    tmp_path: Path, release: str, refused: bool
) -> None:
    """Issue 23, case 10: Helm never upgrades the JobSet CRD a cluster already has, and the API server prunes
    what an older one lacks from every JobSet (onJobFailureMessagePatterns, before JobSet v0.11.0): then a
    preemption fails the whole job. The installed CRD (the upstream release's own, tests/upstream/jobset) is
    read and held against the runtime before anything is declared."""
    from tests.fake_apiserver import JOBSET_CRD_PATH, fake_api_server

    crd = yaml.safe_load((UPSTREAM_JOBSET / f"jobsets-{release}.yaml").read_text())
    with fake_api_server(objects={JOBSET_CRD_PATH: crd}) as server:
        values = server.stack_values(tmp_path)
        if not refused:
            assert parse_settings(values).cluster.existing is not None
            return
        with pytest.raises(StackConfigError) as error:
            parse_settings(values)
    assert str(error.value) == (
        "trainstack:kubeconfigPath: the cluster's jobsets.jobset.x-k8s.io CRD lacks"
        " spec.failurePolicy.rules[].onJobFailureMessagePatterns, which the training runtime needs (JobSet"
        " v0.12.0, what the Trainer chart brings; Helm never upgrades a CRD the cluster has): upgrade JobSet"
        " there, its CRD with kubectl apply --server-side --force-conflicts -f https://raw.githubusercontent.com"
        "/kubernetes-sigs/jobset/v0.12.0/config/components/crd/bases/jobset.x-k8s.io_jobsets.yaml"
    )
    assert "\n" not in str(error.value)


# Written for the mutants that survived `make mutation MODULES=settings`: whole messages and the values that reach
# the components, where the tests above only matched a fragment.
@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"nodeCount": "two"}, "trainstack:nodeCount: must be an integer, got 'two'"),
        ({"nodeCount": True}, "trainstack:nodeCount: must be an integer, got True"),
        (
            {"namespace": "Bad_NS"},
            "trainstack:namespace: must be a DNS-1123 label (lowercase letters, digits, '-'), got 'Bad_NS'",
        ),
        (
            {"memoryPerNode": "lots"},
            "trainstack:memoryPerNode: must be a Kubernetes quantity such as 2, 500m, 8Gi, got 'lots'",
        ),
        ({"k3sAgentHosts": "[1, 2]"}, "trainstack:k3sAgentHosts: must be a list of strings, got '[1, 2]'"),
        (
            {"clusterKind": "k3s", "k3sMode": "docker", "gpusPerNode": "1"},
            "trainstack:gpusPerNode: must be 0 when k3sMode is docker (its nodes get no GPU), got 1;"
            " for GPUs use k3sMode local or remote, or clusterKind kind",
        ),
        (
            {"gpuTimeSlicingReplicas": "1"},
            "trainstack:gpuTimeSlicingReplicas: must be 0 (off) or >= 2, got 1",
        ),
        (
            {"checkpointAccessMode": "ReadOnlyMany"},
            "trainstack:checkpointAccessMode: must be one of \"\", ReadWriteMany, ReadWriteOnce, got 'ReadOnlyMany'",
        ),
        (
            {"nodeCount": "2", "checkpointStorageClass": "nfs", "checkpointAccessMode": "ReadWriteOnce"},
            "trainstack:checkpointAccessMode: must be ReadWriteMany when nodeCount > 1 (every node mounts the"
            " claim), got ReadWriteOnce",
        ),
    ],
)
def test_bad_values_give_the_whole_message(values: dict[str, str], message: str) -> None:
    with pytest.raises(StackConfigError) as error:
        parse_settings(values)
    assert str(error.value) == message


def test_a_registry_password_needs_the_server_and_the_user() -> None:
    with pytest.raises(StackConfigError) as error:
        parse_settings({"registryUsername": "bot"}, registry_password="pw")
    assert str(error.value) == (
        "trainstack:registryServer: registryServer and registryUsername must both be set when registryPassword"
        " is set"
    )


def test_ssh_port_65535_is_the_last_one(tmp_path: Path) -> None:
    key = tmp_path / "id"
    key.write_text("key")
    remote = {
        "clusterKind": "k3s",
        "k3sMode": "remote",
        "k3sServerHost": "192.0.2.1",
        "sshPrivateKeyPath": str(key),
    }
    assert parse_settings({**remote, "sshPort": "65535"}).cluster.remote.port == 65535  # type: ignore[union-attr]
    with pytest.raises(StackConfigError) as error:
        parse_settings({**remote, "sshPort": "65536"})
    assert str(error.value) == "trainstack:sshPort: must be a port number between 1 and 65535, got 65536"


def test_k3s_in_docker_nodes_get_the_release_image_or_the_configured_one(tmp_path: Path) -> None:
    docker = {"clusterKind": "k3s", "k3sMode": "docker"}
    nodes = parse_settings(docker).cluster.docker
    assert nodes is not None and nodes.image == "rancher/k3s:v1.33.6-k3s1" and nodes.airgap_images is None
    (tmp_path / "images").mkdir()
    nodes = parse_settings(
        {**docker, "k3sImage": "mirror/k3s:v1", "k3sAirgapImages": str(tmp_path / "images")}
    ).cluster.docker
    assert nodes is not None and (nodes.image, nodes.airgap_images) == ("mirror/k3s:v1", tmp_path / "images")


def test_base_image_and_platform_reach_the_image_build() -> None:
    image = parse_settings({"baseImage": "my/base:1", "imagePlatform": "linux/arm64"}).image
    assert dict(image.build_args) == {"BASE_IMAGE": "my/base:1"}
    assert image.platform == "linux/arm64"


def test_a_cpu_stack_builds_on_python_and_cpu_wheels_unless_it_names_a_base() -> None:
    assert dict(parse_settings({}).image.build_args) == CPU_BUILD_ARGS
    assert dict(parse_settings({"imageBuildArgs": ["BAKE_TOKENIZER=0"]}).image.build_args) == {
        **CPU_BUILD_ARGS,
        "BAKE_TOKENIZER": "0",
    }
    assert dict(parse_settings({"baseImage": "my/base:1"}).image.build_args) == {"BASE_IMAGE": "my/base:1"}
    named = parse_settings({"imageBuildArgs": ["BASE_IMAGE=my/base:2"]}).image.build_args
    assert dict(named) == {"BASE_IMAGE": "my/base:2"}
    # A GPU stack keeps the Dockerfile's CUDA default.
    gpu = {"clusterKind": "k3s", "gpusPerNode": 1}
    assert dict(parse_settings(gpu).image.build_args) == {}


def test_chart_repositories_by_http_and_https_are_not_local_directories() -> None:
    for chart in ("http://charts.example/kf", "https://charts.example/kf"):
        assert parse_settings({"trainerChart": chart}).trainer.chart == chart


def test_bad_chart_values_show_the_yaml_error() -> None:
    with pytest.raises(StackConfigError) as error:
        parse_settings({"trainerChartValues": "{a: [}"})
    assert str(error.value).startswith(
        "trainstack:trainerChartValues: must be a YAML or JSON mapping of chart values: while parsing"
    )


def test_an_override_of_a_stack_path_is_refused_whatever_its_value_holds() -> None:
    with pytest.raises(
        StackConfigError, match=r"^trainstack:trainingOverrides: may not set checkpoint\.dir: "
    ):
        parse_settings({"trainingOverrides": '["checkpoint.dir=/data/a=b"]'})


def test_load_settings_hands_the_stack_s_secrets_on_as_secrets() -> None:
    """hfToken and registryPassword come from the stack's secret config (through the SDK's mock engine)."""

    def program() -> None:
        settings = load_settings()
        assert settings.access.registry is not None
        pulumi.export("hfToken", settings.access.hf_token)
        pulumi.export("registryPassword", settings.access.registry.password)

    run = evaluate(
        program,
        config={"registryServer": "ghcr.io", "registryUsername": "bot"},
        secrets={"hfToken": "hf_not_a_real_token", "registryPassword": "not-a-real-password"},
    )
    assert is_secret(run.outputs["hfToken"]) and reveal(run.outputs["hfToken"]) == "hf_not_a_real_token"
    assert reveal(run.outputs["registryPassword"]) == "not-a-real-password"
    assert is_secret(run.outputs["registryPassword"])


@pytest.mark.parametrize(
    ("repository", "pushable"),
    [
        ("ghcr.io/acme/trainer", True),
        ("localhost:5000/trainer", True),  # a host with a port and no dot
        ("acme/trainer", False),
        ("acme/trainer.v2", False),  # a dot after the first '/' is no registry host
        ("acme/trainer:v2", False),  # nor is a colon there
    ],
)
def test_a_pushed_image_needs_a_registry_host_first(repository: str, pushable: bool) -> None:
    values = {"imagePush": "true", "imageRepository": repository}
    if pushable:
        assert parse_settings(values).image.repository == repository
        return
    with pytest.raises(StackConfigError) as error:
        parse_settings(values)
    assert str(error.value) == (
        "trainstack:imageRepository: must start with a registry host (e.g. ghcr.io/acme/trainer) when imagePush"
        f" is true, got {repository!r}"
    )


@pytest.mark.parametrize(
    ("values", "mode"),
    [
        ({}, "ReadWriteMany"),  # kind's shared directory, whatever nodeCount
        ({"clusterKind": "k3s", "k3sMode": "local"}, "ReadWriteOnce"),  # the default class, one node
        ({"checkpointStorageClass": "nfs"}, "ReadWriteMany"),
        ({"checkpointStorageClass": "nfs", "nodeCount": "2"}, "ReadWriteMany"),
        ({"nodeCount": "2"}, "ReadWriteMany"),  # the stack's shared directory
        ({"checkpointStorageClass": "local-path", "checkpointAccessMode": "ReadWriteOnce"}, "ReadWriteOnce"),
        ({"checkpointAccessMode": "ReadWriteMany"}, "ReadWriteMany"),
    ],
)
def test_the_checkpoint_claims_access_mode(values: dict[str, str], mode: str) -> None:
    assert parse_settings(values).job.checkpoint_access_mode == mode


def test_a_resize_keeps_the_checkpoint_claim() -> None:
    """A claim's access mode cannot change: a new one replaces the claim and its checkpoints with it."""
    one, two = (
        parse_settings(
            {"checkpointStorageClass": "nfs", "nodeCount": n, "clusterKind": "k3s", "k3sMode": "docker"}
        ).job
        for n in ("1", "2")
    )
    assert (one.checkpoint_access_mode, one.checkpoint_storage_class, one.checkpoint_claim) == (
        two.checkpoint_access_mode,
        two.checkpoint_storage_class,
        two.checkpoint_claim,
    )


def test_the_edges_of_ports_and_timeouts_are_allowed() -> None:
    """metricsPort takes the highest port number; podNamesTimeoutSeconds may be 0 (Pulumi.yaml: >= 0)."""
    job = parse_settings({"metricsPort": "65535", "podNamesTimeoutSeconds": "0"}).job
    assert (job.metrics_port, job.pod_names_timeout_seconds) == (65535, 0)


def test_the_mlflow_server_lives_beside_the_job() -> None:
    """Off by default (no server args at all); on, it takes the stack's namespace and checkpoint class."""
    assert parse_settings({}).mlflow_server is None
    server = parse_settings(
        {
            "mlflowServer": "true",
            "namespace": "team",
            "checkpointStorageClass": "nfs",
            "mlflowStorageSize": "3Gi",
        }
    ).mlflow_server
    assert server is not None
    assert (server.namespace, server.storage_class, server.storage_size) == ("team", "nfs", "3Gi")
    with pytest.raises(StackConfigError) as error:
        parse_settings({"mlflowServer": "true", "mlflowStorageSize": "big"})
    assert str(error.value) == (
        "trainstack:mlflowStorageSize: must be a Kubernetes quantity such as 5Gi, got 'big'"
    )


def test_a_created_priority_class_is_named_after_the_job() -> None:
    """Two stacks on one cluster must not share a cluster-scoped PriorityClass by accident."""
    job = parse_settings({"priorityClassValue": "1000", "trainJobName": "gpt-small"}).job
    assert job.priority_class == "trainstack-gpt-small"


def test_restarts_and_shared_storage_reach_the_job() -> None:
    job = parse_settings({"maxRestarts": "3", "nodeCount": "2"}).job
    assert (job.max_restarts, job.shared_storage_path) == (3, SHARED_STORAGE_PATH)


@pytest.mark.parametrize("kind", [{}, {"clusterKind": "k3s", "k3sMode": "docker"}])
def test_a_resize_on_the_clusters_own_storage_keeps_the_claim(kind: dict[str, str]) -> None:
    """Issue 23, case 2: the checkpoints of a 1-node job are on the stack's shared storage too (node-local
    storage goes with nodes a resize replaces), so 1 -> 2 and back resume from the same claim."""
    one, two = (parse_settings({**kind, "nodeCount": n}) for n in ("1", "2"))
    assert one.cluster.shared_storage and two.cluster.shared_storage
    assert (one.job.checkpoint_access_mode, one.job.checkpoint_claim, one.job.shared_volume) == (
        two.job.checkpoint_access_mode,
        two.job.checkpoint_claim,
        two.job.shared_volume,
    )
    job = parse_settings({"nodeCount": "2", "checkpointStorageClass": "nfs-client"}).job
    assert job.shared_storage_path == ""


S3 = {"checkpointS3Url": "s3://team-bucket/training", "checkpointS3Secret": "s3-credentials"}


def test_checkpoints_in_an_object_store_keep_outputs_and_cache_on_the_claim() -> None:
    settings = parse_settings({**S3, "checkpointS3Endpoint": "http://minio.storage.svc:9000",
                               "checkpointS3Region": "eu-central-1"})  # fmt: skip
    config = yaml.safe_load(settings.job.train_config)
    assert config["checkpoint"]["dir"] == "s3://team-bucket/training/gpt-train/checkpoints"
    assert config["output"]["dir"] == "/mnt/checkpoints/gpt-train/output"
    assert config["data"]["cache_dir"] == "/mnt/checkpoints/tokens"  # shared by the jobs on the volume
    assert config["data"]["path"] == "trainer/data"  # dataSource's default: the bundled sample
    assert settings.job.object_store == ObjectStore(
        url="s3://team-bucket/training/gpt-train/checkpoints",
        secret="s3-credentials",
        endpoint="http://minio.storage.svc:9000",
        region="eu-central-1",
    )
    assert parse_settings({}).job.object_store is None
    bucket_root = parse_settings({**S3, "checkpointS3Url": "s3://team-bucket/"}).job.object_store
    assert bucket_root is not None and bucket_root.url == "s3://team-bucket/gpt-train/checkpoints"
    assert bucket_root.endpoint == "" and bucket_root.region == "us-east-1"  # Amazon S3


@pytest.mark.parametrize(
    ("values", "message"),
    [
        (
            {**S3, "checkpointS3Url": "s3://Team_Bucket/x"},
            "trainstack:checkpointS3Url: must be s3://bucket/prefix (bucket: 3-63 lowercase letters, digits, '.'"
            " or '-'; prefix: '/'-separated names, none empty, '.' or '..'), got 's3://Team_Bucket/x'",
        ),
        (
            {**S3, "checkpointS3Url": "gs://team-bucket/x"},
            "trainstack:checkpointS3Url: must be s3://bucket/prefix",
        ),
        (
            {"checkpointS3Url": "s3://team-bucket/x"},
            "trainstack:checkpointS3Secret: must name the Secret in the namespace that holds AWS_ACCESS_KEY_ID and"
            " AWS_SECRET_ACCESS_KEY when checkpointS3Url is set",
        ),
        (
            {**S3, "checkpointS3Secret": "S3 Keys"},
            "trainstack:checkpointS3Secret: must be a Secret name (a DNS-1123 subdomain), got 'S3 Keys'",
        ),
        (
            {"checkpointS3Secret": "s3-credentials"},
            "trainstack:checkpointS3Secret: applies only with checkpointS3Url (s3://bucket/prefix), which is empty",
        ),
        (
            {"checkpointS3Endpoint": "http://minio:9000"},
            "trainstack:checkpointS3Endpoint: applies only with checkpointS3Url (s3://bucket/prefix), which is empty",
        ),
        (
            {**S3, "checkpointS3Endpoint": "minio:9000"},
            "trainstack:checkpointS3Endpoint: must be an http:// or https:// URL such as"
            " http://minio.storage.svc:9000 (no credentials in it), got 'minio:9000'",
        ),
        (
            {**S3, "checkpointS3Endpoint": "https://key:secret@minio:9000"},
            "trainstack:checkpointS3Endpoint: must be an http:// or https:// URL",
        ),
        (
            {**S3, "checkpointS3Region": "EU Central"},
            "trainstack:checkpointS3Region: must be an S3 region name such as us-east-1, got 'EU Central'",
        ),
        (
            {"checkpointS3Region": "eu central"},
            "trainstack:checkpointS3Region: must be an S3 region name such as us-east-1, got 'eu central'",
        ),
        (
            {**S3, "trainingOverrides": '["checkpoint.dir=/data"]'},
            "trainstack:trainingOverrides: may not set checkpoint.dir: the stack sets it"
            " (s3://team-bucket/training/gpt-train/checkpoints)",
        ),
    ],
)
def test_bad_object_store_settings_give_one_line(values: dict[str, str], message: str) -> None:
    with pytest.raises(StackConfigError) as error:
        parse_settings(values)
    assert str(error.value).startswith(message)


def test_shm_size_is_bounded_by_the_memory_it_counts_against() -> None:
    """shmSize and memoryPerNode bound each other: checked together, one line naming both."""
    assert parse_settings({"memoryPerNode": "4Gi", "shmSize": "4096Mi"}).job.shm_size == "4096Mi"
    with pytest.raises(StackConfigError) as error:
        parse_settings({"memoryPerNode": "3Gi", "shmSize": "4G"})
    assert str(error.value) == (
        "trainstack:shmSize: must be at most memoryPerNode (3Gi): /dev/shm is memory counted against that"
        " limit, got 4G"
    )


def test_data_source_names_the_corpus_and_an_s3_one_reads_with_the_checkpoint_store() -> None:
    config = yaml.safe_load(parse_settings({"dataSource": "/mnt/checkpoints/corpus"}).job.train_config)
    assert config["data"]["path"] == "/mnt/checkpoints/corpus"
    on_s3 = parse_settings({**S3, "dataSource": "s3://team-bucket/corpus/"})
    assert yaml.safe_load(on_s3.job.train_config)["data"]["path"] == "s3://team-bucket/corpus/"
    assert on_s3.job.object_store is not None  # its Secret and endpoint reach the pods
    for values, message in [
        (
            {"dataSource": "s3://team-bucket/corpus"},
            "dataSource: an s3:// source is read with the checkpoint",
        ),
        ({**S3, "dataSource": "s3://Team_Bucket/x"}, "dataSource: must be s3://bucket/prefix"),
        ({"dataSource": " "}, "dataSource: must name the corpus: trainer/data (the bundled sample)"),
        (
            {"trainingOverrides": '["data.path=/x"]'},
            "may not set data.path: the stack sets it from dataSource",
        ),
    ]:
        with pytest.raises(StackConfigError) as error:
            parse_settings(values)
        assert message in str(error.value)


@pytest.mark.parametrize(
    "source", ["./my_corpus.txt", "my_corpus", "http://x/y", "HF://x", "trainer/database"]
)
def test_a_data_source_no_pod_can_read_is_refused_in_one_line(source: str) -> None:
    """A relative path is resolved in the image's working directory, where only trainer/data exists; a URL
    scheme other than s3:// and hf:// is read by nothing (trainer.sources)."""
    with pytest.raises(StackConfigError) as error:
        parse_settings({"dataSource": source})
    assert str(error.value) == (
        "trainstack:dataSource: must be trainer/data (the bundled sample), an absolute path inside the pod "
        "(on the checkpoint volume, /mnt/checkpoints/..., or in the image), s3://bucket/prefix or hf://name; "
        f"got {source!r}"
    )


@pytest.mark.parametrize(
    "source", ["trainer/data", "trainer/data/hamlet.txt", "/mnt/checkpoints/corpus/*.jsonl", "hf://org/name"]
)
def test_a_data_source_a_pod_reads_is_kept(source: str) -> None:
    assert yaml.safe_load(parse_settings({"dataSource": source}).job.train_config)["data"]["path"] == source


def test_an_hf_source_names_a_dataset_and_the_scheme_is_the_trainers() -> None:
    from components.training_job_config import HF_SCHEME as STACK_HF_SCHEME
    from trainer.sources import HF_SCHEME

    assert STACK_HF_SCHEME == HF_SCHEME
    with pytest.raises(StackConfigError, match="dataSource: must be hf://name"):
        parse_settings({"dataSource": "hf://"})
