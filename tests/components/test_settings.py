"""The stack's config put together (components/stack.py): Pulumi.yaml's keys and coercion, and each
component's rules as the stack's values reach them."""

from __future__ import annotations

from pathlib import Path

import pulumi
import pytest
import yaml

from components.cluster.provider import RemoteHosts
from components.settings import SECRET_KEYS, StackConfigError, declared_keys, label_value, resolve_values
from components.stack import load_settings, parse_settings
from components.trainer_image import CPU_BUILD_ARGS, DockerNodesImport, K3sImport, KindLoad
from tests.support.stack_helpers import evaluate, is_secret, reveal


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
        StackConfigError,
        match=r"^trainstack:nodeCount: must be at most the number of remote hosts \(k3sServerHost \+"
        r" k3sAgentHosts = 1\), got 2$",
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


# Remote hosts go into SSH, k3s's --tls-san (one word: a space was a traceback at `up`) and /etc/exports.
@pytest.mark.parametrize(
    ("values", "message"),
    [
        (
            {"k3sServerHost": "192.0.2.1 x", "k3sAgentHosts": "[]"},
            "trainstack:k3sServerHost: must be a host name or IPv4 address, got '192.0.2.1 x'",
        ),
        (
            {"k3sServerHost": "ubuntu@gpu1", "k3sAgentHosts": "[]"},
            "trainstack:k3sServerHost: must be a host name or IPv4 address, got 'ubuntu@gpu1'",
        ),
        (
            {"k3sServerHost": "gpu1", "k3sAgentHosts": '["gpu2", "-x"]'},
            "trainstack:k3sAgentHosts: entry 1: must be a host name or IPv4 address, got '-x'",
        ),
        (
            {"k3sServerHost": "gpu1", "k3sAgentHosts": '[""]'},
            "trainstack:k3sAgentHosts: entry 0: must be a host name or IPv4 address, got ''",
        ),
        (
            {"k3sServerHost": "192.0.2.011", "k3sAgentHosts": "[]"},
            "trainstack:k3sServerHost: must be a host name or IPv4 address, got '192.0.2.011'",
        ),
        (
            {"k3sServerHost": "192.0.2.300", "k3sAgentHosts": "[]"},
            "trainstack:k3sServerHost: must be a host name or IPv4 address, got '192.0.2.300'",
        ),
        (
            {"k3sServerHost": "2001:db8::1", "k3sAgentHosts": "[]"},
            "trainstack:k3sServerHost: must be a host name or IPv4 address, got '2001:db8::1'",
        ),
        (
            {"k3sServerHost": "gpu1", "k3sAgentHosts": '["gpu2", " gpu1"]'},
            "trainstack:k3sAgentHosts: must name each host once, the server included; gpu1 is there twice",
        ),
        (
            {"k3sServerHost": "gpu1", "k3sAgentHosts": '["gpu2", "gpu2"]'},
            "trainstack:k3sAgentHosts: must name each host once, the server included; gpu2 is there twice",
        ),
        (
            {"sshUser": "my user"},
            "trainstack:sshUser: must be a user name (letters, digits, '_', '.', '-'; at most 32), got 'my user'",
        ),
        (
            {"sshUser": "ubuntu@gpu1"},
            "trainstack:sshUser: must be a user name (letters, digits, '_', '.', '-'; at most 32), got 'ubuntu@gpu1'",
        ),
        # pathlib's expanduser raised RuntimeError (a traceback) for a user this machine does not know
        (
            {"sshPrivateKeyPath": "~nosuchuser-x/.ssh/id"},
            "trainstack:sshPrivateKeyPath: must be an existing private key file, ~nosuchuser-x/.ssh/id does not exist",
        ),
    ],
)
def test_remote_settings_give_one_line(tmp_path: Path, values: dict[str, str], message: str) -> None:
    key = tmp_path / "id"
    key.write_text("key")
    remote = {
        "clusterKind": "k3s",
        "k3sMode": "remote",
        "k3sServerHost": "gpu1",
        "sshPrivateKeyPath": str(key),
    }
    with pytest.raises(StackConfigError) as raised:
        parse_settings({**remote, **values})
    assert str(raised.value) == message


@pytest.mark.parametrize(
    ("values", "message"),
    [
        (
            {"clusterKind": "k3s", "k3sMode": "docker", "k3sAirgapImages": "~nosuchuser-x/images"},
            "trainstack:k3sAirgapImages: must be an existing directory of image archives",
        ),
        (
            {"clusterKind": "existing", "kubeconfigPath": "~nosuchuser-x/.kube/config"},
            "trainstack:kubeconfigPath: cannot read ~nosuchuser-x/.kube/config: No such file or directory",
        ),
        ({"trainerChart": "~nosuchuser-x/chart"}, "trainstack:trainerChart: must be an oci:// reference"),
    ],
)
def test_a_path_under_an_unknown_users_home_is_one_line(values: dict[str, str], message: str) -> None:
    with pytest.raises(StackConfigError) as raised:
        parse_settings(values)
    assert str(raised.value).startswith(message)


def test_remote_hosts_take_names_and_ipv4_addresses(tmp_path: Path) -> None:
    key = tmp_path / "id"
    key.write_text("key")
    values = {"clusterKind": "k3s", "k3sMode": "remote", "sshPrivateKeyPath": str(key)}
    hosts = '["gpu-2.example.com", "gpu3"]'
    settings = parse_settings({**values, "k3sServerHost": "192.0.2.1", "k3sAgentHosts": hosts})
    assert settings.cluster.remote is not None
    assert settings.cluster.remote.all == ("192.0.2.1", "gpu-2.example.com", "gpu3")


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


def test_an_existing_cluster_is_reached_through_its_kubeconfig_and_pulls_the_pushed_image(
    tmp_path: Path,
) -> None:
    from tests.support.fake_apiserver import JOBSET_CRD_PATH, fake_api_server

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
    from tests.support.fake_apiserver import JOBSET_CRD_PATH, fake_api_server

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
        # A trailing newline (a YAML block scalar) is no match: `$` alone would let it through.
        (
            {"memoryPerNode": "8Gi\n"},
            "trainstack:memoryPerNode: must be a Kubernetes quantity such as 2, 500m, 8Gi, got '8Gi\\n'",
        ),
        (
            {"trainJobName": "gpt\n"},
            "trainstack:trainJobName: must be a DNS-1123 label (lowercase letters, digits, '-'), got 'gpt\\n'",
        ),
        (
            {"priorityClassName": "high\n", "priorityClassValue": "100"},
            "trainstack:priorityClassName: must be a DNS-1123 label (lowercase letters, digits, '-'), got 'high\\n'",
        ),
        (
            {"k3sAgentHosts": "[1, 2]"},
            "trainstack:k3sAgentHosts: must be a list of strings (in the stack file [a, b]; from the CLI"
            " `pulumi config set --path 'k3sAgentHosts[0]' a`), got '[1, 2]'",
        ),
        (  # `pulumi config set trainingOverrides train.max_steps=5`: a plain string, not JSON (was a traceback)
            {"trainingOverrides": "train.max_steps=5"},
            "trainstack:trainingOverrides: must be a list of strings (in the stack file [a, b]; from the CLI"
            " `pulumi config set --path 'trainingOverrides[0]' a`), got 'train.max_steps=5'",
        ),
        ({"nodeCount": 1.5}, "trainstack:nodeCount: must be an integer, got 1.5"),  # was cut to 1
        ({"sshPort": "22.5"}, "trainstack:sshPort: must be an integer, got '22.5'"),
        (
            {"metricsPort": -1},
            "trainstack:metricsPort: must be 0 (off) or a port number between 1 and 65535, got -1",
        ),
        (
            {"nodecount": 2},
            "trainstack:nodecount: unknown key (did you mean nodeCount?); allowed keys: "
            + ", ".join(sorted([*declared_keys(), *SECRET_KEYS])),
        ),
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
        # hosts without k3sMode remote were ignored: k3s went onto this machine, or kind came up
        (
            {"clusterKind": "k3s", "k3sServerHost": "192.0.2.10"},
            "trainstack:k3sServerHost: is set while k3sMode is local: only k3sMode remote uses it;"
            " set k3sMode remote or remove it",
        ),
        (
            {"k3sAgentHosts": '["192.0.2.11"]'},
            "trainstack:k3sAgentHosts: is set while clusterKind is kind: only k3sMode remote uses it;"
            " set k3sMode remote or remove it",
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
    assert parse_settings({**remote, "sshPort": "1"}).cluster.remote.port == 1  # type: ignore[union-attr]
    with pytest.raises(StackConfigError) as error:
        parse_settings({**remote, "sshPort": "65536"})
    assert str(error.value) == "trainstack:sshPort: must be a port number between 1 and 65535, got 65536"
    with pytest.raises(StackConfigError) as error:  # the same line below the range as above it
        parse_settings({**remote, "sshPort": "0"})
    assert str(error.value) == "trainstack:sshPort: must be a port number between 1 and 65535, got 0"


def test_k3s_in_docker_nodes_get_the_release_image_or_the_configured_one(tmp_path: Path) -> None:
    docker = {"clusterKind": "k3s", "k3sMode": "docker"}
    nodes = parse_settings(docker).cluster.docker
    assert nodes is not None and nodes.image == "rancher/k3s:v1.33.6-k3s1" and nodes.airgap_images is None
    # An unpushed image goes into every container node, found by the label the nodes carry.
    delivery = parse_settings(docker).image.delivery
    assert delivery == DockerNodesImport("trainstack", "dev.trainstack.cluster")
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


def test_the_node_image_and_the_k3s_version_reach_the_cluster() -> None:
    cluster = parse_settings(
        {"clusterKind": "k3s", "kindNodeImage": "mirror/node:v1.33.1", "k3sVersion": "v1.32.9+k3s1"}
    ).cluster
    assert (cluster.kind_node_image, cluster.k3s_version) == ("mirror/node:v1.33.1", "v1.32.9+k3s1")


def test_the_metrics_select_the_job_s_rank_0_pod() -> None:
    monitoring = parse_settings({"trainJobName": "gpt-small", "metricsPort": "9090"}).monitoring
    assert monitoring is not None and dict(monitoring.rank0_labels) == {
        "jobset.sigs.k8s.io/jobset-name": "gpt-small",
        "batch.kubernetes.io/job-completion-index": "0",
    }


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("trainstack.dev-1_a", "trainstack.dev-1_a"),  # every allowed character kept, either case
        ("Train Stack/prod:v2", "Train-Stack-prod-v2"),
        ("_-.stack.-_", "stack"),  # alphanumeric at both ends
        ("a" * 62 + "/b", "a" * 62),  # at most 63 characters, then trimmed
    ],
)
def test_a_label_value_keeps_what_kubernetes_allows(text: str, value: str) -> None:
    assert label_value(text) == value


def test_the_gpu_operator_s_owner_is_the_project_and_stack() -> None:
    """load_settings names the stack that installs the GPU Operator (its namespace's owner label)."""

    def program() -> None:
        gpu = load_settings().gpu
        assert gpu is not None and gpu.operator is not None
        pulumi.export("owner", gpu.operator.owner)

    run = evaluate(program, stack="team/gpu", config={"clusterKind": "k3s", "gpusPerNode": "1"})
    assert run.outputs["owner"] == "trainstack.team-gpu"
