"""The stack's configuration, parsed and validated before any resource is declared.

Pulumi.yaml's `config:` block is the one list of keys, types and defaults; this module reads it, applies the
stack's values on top, checks every rule and turns the result into the components' Args. A bad value raises
one StackConfigError naming the key and what is allowed.
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import pulumi
import yaml

from components.access import AccessArgs, RegistryCredentials
from components.cluster import (
    ClusterArgs,
    DockerNodes,
    ExistingCluster,
    KubeconfigError,
    RemoteHosts,
    ask_api,
    check_api_server,
    host_gpu_count,
    provider_for,
    read_custom_resource_definition,
    read_kubeconfig,
)
from components.gpu_operator import (
    GPU_OPERATOR_MODES,
    INVENTORY_PATHS,
    GpuOperatorArgs,
    GpuSetup,
    GpuSetupError,
    gpu_setup,
    inventory_from_api,
)
from components.kubeflow_trainer import (
    JOBSET_CRD,
    JOBSET_CRD_URL,
    JOBSET_RELEASE,
    TRAINER_CHART_NAME,
    TRAINJOB_STATUS_VALUES,
    KubeflowTrainerArgs,
    jobset_schema_gaps,
    merged_values,
)
from components.mlflow_server import MlflowServerArgs, tracking_uri
from components.monitoring import MonitoringArgs
from components.trainer_image import Delivery, DockerNodesImport, K3sImport, KindLoad, TrainerImageArgs
from components.training_job import (
    CHECKPOINT_ACCESS_MODES,
    CHECKPOINT_MOUNT,
    MIN_GRACE_PERIOD_SECONDS,
    PREEMPTION_POLICIES,
    S3_SECRET_KEYS,
    ObjectStore,
    PriorityClassSpec,
    TrainingJobArgs,
    default_grace_period_seconds,
    job_paths,
    rank0_labels,
    training_runtime_spec,
)
from trainer.config import S3_URL_SHAPE, ConfigError, TrainConfig, load_config, parse_s3_url

PROJECT = "trainstack"
REPO_ROOT = Path(__file__).resolve().parent.parent
PRESETS_DIR = REPO_ROOT / "trainer" / "configs"
# Secrets the program reads but Pulumi.yaml cannot declare (a declared key needs a default).
SECRET_KEYS = ("hfToken", "registryPassword", "kubeconfig")
KUBECONFIG_NOT_SECRET = 'must be a secret, as it holds the cluster\'s credentials: pulumi config set --secret kubeconfig "$(cat ...)"'
TRAINING_SERVICE_ACCOUNT = "trainer"

_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
_QUANTITY = re.compile(r"^[0-9]+(\.[0-9]+)?(m|k|M|G|T|P|E|Ki|Mi|Gi|Ti|Pi|Ei)?$")
_DNS_LABEL_RULE = "a DNS-1123 label (lowercase letters, digits, '-')"
_DNS_SUBDOMAIN = re.compile(r"^(?=.{1,253}$)[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_ENDPOINT = re.compile(r"^https?://[^\s/?#@]+(/[^\s?#]*)?$")
_REGION = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_K3S_VERSION = re.compile(r"^v[0-9]+\.[0-9]+\.[0-9]+\+k3s[0-9]+$")
_BUILD_ARG = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")
# A CPU stack's image: plain Python and PyTorch's CPU wheels (about 1 GB) instead of the CUDA base (about 8 GB).
CPU_BUILD_ARGS = {
    "BASE_IMAGE": "python:3.12-slim-bookworm",
    "TORCH_INDEX_URL": "https://download.pytorch.org/whl/cpu",
}
K3S_IMAGE_REPOSITORY = "rancher/k3s"
# Kubernetes reserves priorities above one billion (and the system- prefix) for system classes.
MAX_USER_PRIORITY = 1_000_000_000
MIN_PRIORITY = -2_147_483_648


class StackConfigError(pulumi.RunError):
    """A stack config value that cannot be used; Pulumi prints the message alone, without a traceback."""


@dataclass(frozen=True)
class ConfigKey:
    """One key of Pulumi.yaml's config block."""

    # Declared type: string, integer, boolean or array (of strings).
    type: str
    # Value used when the stack sets none.
    default: Any
    # What the key means.
    description: str


@dataclass(frozen=True)
class StackSettings:
    """Everything the program declares, as the components' Args."""

    cluster: ClusterArgs
    # None on a CPU-only stack.
    gpu: GpuSetup | None
    trainer: KubeflowTrainerArgs
    access: AccessArgs
    image: TrainerImageArgs
    job: TrainingJobArgs
    # None when metricsPort is 0.
    monitoring: MonitoringArgs | None = None
    # None unless mlflowServer is true.
    mlflow_server: MlflowServerArgs | None = None


@cache
def declared_keys() -> dict[str, ConfigKey]:
    """The keys of Pulumi.yaml's config block."""
    project = yaml.safe_load((REPO_ROOT / "Pulumi.yaml").read_text())
    return {
        key: ConfigKey(spec["type"], spec.get("default"), spec.get("description", ""))
        for key, spec in project["config"].items()
    }


def available_presets() -> list[str]:
    """Training presets: the files under trainer/configs."""
    return sorted(path.stem for path in PRESETS_DIR.glob("*.yaml"))


# Kubernetes quantity suffixes (k8s.io/apimachinery pkg/api/resource): binary, decimal, and milli.
_QUANTITY_SUFFIXES = {
    **{
        suffix: 1024**power for power, suffix in enumerate(("", "Ki", "Mi", "Gi", "Ti", "Pi", "Ei")) if suffix
    },
    **{suffix: 1000**power for power, suffix in enumerate(("", "k", "M", "G", "T", "P", "E"))},
    "m": 0.001,
}


def quantity_bytes(quantity: str) -> float:
    """The value of a Kubernetes quantity that matched _QUANTITY (e.g. 8Gi, 500M, 2), in base units."""
    number = quantity.rstrip("".join({c for suffix in _QUANTITY_SUFFIXES for c in suffix}))
    return float(number) * _QUANTITY_SUFFIXES[quantity[len(number) :]]


def _error(key: str, problem: str) -> StackConfigError:
    return StackConfigError(f"{PROJECT}:{key}: {problem}")


def _coerce(key: str, spec: ConfigKey, raw: Any) -> Any:
    """A stack value in its declared type. Pulumi hands every value over as a string (arrays as JSON)."""
    if spec.type == "string":
        return str(raw)
    if spec.type == "integer":
        if isinstance(raw, bool):
            raise _error(key, f"must be an integer, got {raw!r}")
        try:
            return int(raw)
        except (TypeError, ValueError):
            raise _error(key, f"must be an integer, got {raw!r}") from None
    if spec.type == "boolean":
        text = str(raw).lower()
        if text not in ("true", "false"):
            raise _error(key, f"must be true or false, got {raw!r}")
        return text == "true"
    values = json.loads(raw) if isinstance(raw, str) else raw
    if not isinstance(values, list) or not all(isinstance(item, str) for item in values):
        raise _error(key, f"must be a list of strings, got {raw!r}")
    return values


def resolve_values(stack_values: Mapping[str, Any]) -> dict[str, Any]:
    """Declared defaults with the stack's values on top, each in its declared type; unknown keys are errors."""
    keys = declared_keys()
    unknown = sorted(set(stack_values) - set(keys) - set(SECRET_KEYS))
    if unknown:
        allowed = ", ".join(sorted([*keys, *SECRET_KEYS]))
        raise _error(unknown[0], f"unknown key; allowed keys: {allowed}")
    return {
        key: _coerce(key, spec, stack_values[key]) if key in stack_values else spec.default
        for key, spec in keys.items()
    }


def _one_of(values: Mapping[str, Any], key: str, allowed: list[str]) -> str:
    value = str(values[key])
    if value not in allowed:
        # An allowed empty value (a key's "follow the default") shows as "", not as nothing between commas.
        shown = ", ".join(option or '""' for option in allowed)
        raise _error(key, f"must be one of {shown}, got {value!r}")
    return value


def _at_least(values: Mapping[str, Any], key: str, minimum: int) -> int:
    value = int(values[key])
    if value < minimum:
        raise _error(key, f"must be an integer >= {minimum}, got {value}")
    return value


def _matching(values: Mapping[str, Any], key: str, pattern: re.Pattern[str], what: str) -> str:
    value = str(values[key])
    if not pattern.match(value):
        raise _error(key, f"must be {what}, got {value!r}")
    return value


def _remote_hosts(values: Mapping[str, Any], node_count: int) -> RemoteHosts:
    server = str(values["k3sServerHost"]).strip()
    if not server:
        raise _error(
            "k3sServerHost",
            "must name the k3s server's address when k3sMode is remote (allowed: a host name or IP)",
        )
    agents = tuple(values["k3sAgentHosts"])
    if node_count > 1 + len(agents):
        raise _error(
            "nodeCount",
            f"must be at most the number of remote hosts (k3sServerHost + k3sAgentHosts = {1 + len(agents)}), got {node_count}",
        )
    key_path = Path(str(values["sshPrivateKeyPath"])).expanduser()
    if not key_path.is_file():
        raise _error("sshPrivateKeyPath", f"must be an existing private key file, {key_path} does not exist")
    port = _at_least(values, "sshPort", 1)
    if port > 65535:
        raise _error("sshPort", f"must be a port number between 1 and 65535, got {port}")
    return RemoteHosts(server, agents, str(values["sshUser"]), port, key_path)


def _docker_nodes(values: Mapping[str, Any], gpus_per_node: int) -> DockerNodes:
    if gpus_per_node:
        raise _error(
            "gpusPerNode",
            f"must be 0 when k3sMode is docker (its nodes get no GPU), got {gpus_per_node};"
            " for GPUs use k3sMode local or remote, or clusterKind kind",
        )
    # The official image tag of a k3s release spells '+' as '-' (v1.33.6+k3s1 -> v1.33.6-k3s1).
    image = str(values["k3sImage"]) or f"{K3S_IMAGE_REPOSITORY}:{str(values['k3sVersion']).replace('+', '-')}"
    airgap_images: Path | None = None
    if values["k3sAirgapImages"]:
        airgap_images = Path(str(values["k3sAirgapImages"])).expanduser().resolve()
        if not airgap_images.is_dir():
            raise _error(
                "k3sAirgapImages",
                f"must be an existing directory of image archives (docker save), {airgap_images} is not one",
            )
    return DockerNodes(image=image, airgap_images=airgap_images)


def _existing_cluster(values: Mapping[str, Any], kubeconfig: str | None) -> ExistingCluster:
    """The user's kubeconfig (the secret or kubeconfigPath), parsed and reduced; its server is asked later."""
    try:
        return read_kubeconfig(
            secret=kubeconfig, path=str(values["kubeconfigPath"]), context=str(values["kubeContext"])
        )
    except KubeconfigError as error:
        raise _error(error.key, error.problem) from None


def _kind_gpus(node_count: int, gpus_per_node: int) -> None:
    """kind shares this machine's GPUs with one node: nodeCount 1, and no more GPUs than the host has."""
    if node_count > 1:
        raise _error(
            "nodeCount",
            f"must be 1 when clusterKind is kind and gpusPerNode > 0 (every kind node would get all of this"
            f" machine's GPUs), got {node_count}; for several GPU nodes use k3sMode remote or clusterKind existing",
        )
    available = host_gpu_count()
    if gpus_per_node > available:
        raise _error(
            "gpusPerNode",
            f"must be at most the GPUs of this machine, which the kind node shares (nvidia-smi lists"
            f" {available}), got {gpus_per_node}",
        )


def _cluster(values: Mapping[str, Any], kubeconfig: str | None = None) -> ClusterArgs:
    kind = _one_of(values, "clusterKind", ["kind", "k3s", "existing"])
    node_count = _at_least(values, "nodeCount", 1)
    gpus_per_node = _at_least(values, "gpusPerNode", 0)
    remote: RemoteHosts | None = None
    docker: DockerNodes | None = None
    existing: ExistingCluster | None = None
    if kind == "existing":
        existing = _existing_cluster(values, kubeconfig)
    if kind == "k3s":
        _matching(values, "k3sVersion", _K3S_VERSION, "a k3s release such as v1.33.6+k3s1")
        mode = _one_of(values, "k3sMode", ["local", "remote", "docker"])
        if mode == "remote":
            remote = _remote_hosts(values, node_count)
        elif mode == "docker":
            docker = _docker_nodes(values, gpus_per_node)
        elif node_count != 1:
            raise _error(
                "nodeCount",
                f"must be 1 when k3sMode is local (one machine), got {node_count}; use k3sMode remote or docker for more nodes",
            )
    if kind == "kind" and gpus_per_node:
        _kind_gpus(node_count, gpus_per_node)
    args = ClusterArgs(
        kind=kind,
        name=_matching(values, "clusterName", _DNS_LABEL, _DNS_LABEL_RULE),
        node_count=node_count,
        gpus_per_node=gpus_per_node,
        kind_node_image=str(values["kindNodeImage"]),
        k3s_version=str(values["k3sVersion"]),
        remote=remote,
        docker=docker,
        existing=existing,
    )
    # The checkpoints live on the cluster's own shared storage unless the user names a class, whatever
    # nodeCount: a resize (1 -> 2 or back) then resumes from the same directory, while node-local storage
    # would go with nodes a resize replaces. A kind without shared storage (k3s local, existing) uses the
    # cluster's default class, one node only.
    provided = provider_for(args).shared_storage is not None
    args = dataclasses.replace(args, shared_storage=provided and not values["checkpointStorageClass"])
    if node_count > 1 and not values["checkpointStorageClass"] and not provided:
        raise _error(
            "checkpointStorageClass",
            f"must name a ReadWriteMany StorageClass of the cluster when clusterKind is {kind} and nodeCount > 1"
            " (the stack provides no shared storage on it), got ''",
        )
    return args


def _gpu_setup(mode: str, operator: GpuOperatorArgs, cluster: ClusterArgs, ask_api_server: bool) -> GpuSetup:
    """Install the GPU Operator or use the GPUs an existing cluster offers (asked of its API server)."""
    inventory = None
    if cluster.existing is not None and ask_api_server:
        try:
            inventory = inventory_from_api(ask_api(cluster.existing, INVENTORY_PATHS))
        except KubeconfigError as error:
            raise _error(error.key, error.problem) from None
    if cluster.existing is not None and not ask_api_server and mode == "auto":
        # scripts/check_stack.py asks no cluster: `auto` is decided by `up`, from what the cluster offers.
        setup = GpuSetup(
            None, None, "GPU Operator: decided by `up` from what the cluster offers (gpuOperator auto)"
        )
    else:
        try:
            setup = gpu_setup(mode, operator, inventory)
        except GpuSetupError as error:
            raise _error("gpuOperator", str(error)) from None
        if setup.operator is None and operator.time_slicing_replicas:
            raise _error(
                "gpuTimeSlicingReplicas",
                "must be 0 when the stack does not install the GPU Operator (the cluster's device plugin keeps its"
                f" own sharing config), got {operator.time_slicing_replicas}",
            )
    return setup


def _port(values: Mapping[str, Any], key: str) -> int:
    port = _at_least(values, key, 0)
    if port > 65535:
        raise _error(key, f"must be 0 (off) or a port number between 1 and 65535, got {port}")
    return port


def _priority(values: Mapping[str, Any], job_name: str) -> tuple[str, PriorityClassSpec | None]:
    """The training pods' PriorityClass name, and its spec when the stack creates it (priorityClassValue != 0)."""
    name = str(values["priorityClassName"])
    value = int(values["priorityClassValue"])
    policy = _one_of(values, "priorityPreemptionPolicy", list(PREEMPTION_POLICIES))
    if name and not _DNS_LABEL.match(name):
        raise _error("priorityClassName", f"must be {_DNS_LABEL_RULE}, got {name!r}")
    if value == 0:
        if policy != PREEMPTION_POLICIES[0]:
            raise _error(
                "priorityPreemptionPolicy",
                "applies only to a class the stack creates (priorityClassValue != 0); an existing class keeps its own",
            )
        return name, None
    if not MIN_PRIORITY <= value <= MAX_USER_PRIORITY:
        raise _error(
            "priorityClassValue",
            f"must be between {MIN_PRIORITY} and {MAX_USER_PRIORITY} (higher values are reserved for system classes), got {value}",
        )
    name = name or f"trainstack-{job_name}"
    if name.startswith("system-"):
        raise _error(
            "priorityClassName",
            f"must not start with 'system-' (reserved) for a class the stack creates, got {name!r}",
        )
    return name, PriorityClassSpec(value=value, preemption_policy=policy)


def _object_store(values: Mapping[str, Any], job_name: str) -> ObjectStore | None:
    """Where the checkpoints go when checkpointS3Url is set, checked; None keeps them on the claim."""
    region = _matching(values, "checkpointS3Region", _REGION, "an S3 region name such as us-east-1")
    url = str(values["checkpointS3Url"]).strip()
    if not url:
        for key in ("checkpointS3Secret", "checkpointS3Endpoint"):
            if values[key]:
                raise _error(key, "applies only with checkpointS3Url (s3://bucket/prefix), which is empty")
        return None
    try:
        parse_s3_url(url)
    except ConfigError:
        raise _error("checkpointS3Url", f"must be {S3_URL_SHAPE}, got {url!r}") from None
    secret = str(values["checkpointS3Secret"])
    if not secret:
        raise _error(
            "checkpointS3Secret",
            f"must name the Secret in the namespace that holds {' and '.join(S3_SECRET_KEYS)} when"
            " checkpointS3Url is set",
        )
    if not _DNS_SUBDOMAIN.match(secret):
        raise _error("checkpointS3Secret", f"must be a Secret name (a DNS-1123 subdomain), got {secret!r}")
    endpoint = str(values["checkpointS3Endpoint"])
    if endpoint and not _ENDPOINT.match(endpoint):
        raise _error(
            "checkpointS3Endpoint",
            f"must be an http:// or https:// URL such as http://minio.storage.svc:9000 (no credentials in it), got {endpoint!r}",
        )
    return ObjectStore(
        url=job_paths(job_name, url)["checkpoint.dir"],
        secret=secret,
        endpoint=endpoint,
        region=region,
    )


BUNDLED_DATA = "trainer/data"  # the sample in the image, relative to its working directory (/app)
HF_SCHEME = "hf://"  # trainer.sources.HF_SCHEME (not imported: it needs numpy, which the stack's venv lacks)


def _data_source(values: Mapping[str, Any], object_store: ObjectStore | None) -> str:
    """dataSource checked: one a pod can read (trainer.sources.resolve_source); an s3:// source is read from
    the checkpoint object store with its Secret."""
    source = str(values["dataSource"]).strip()
    allowed = (
        f"{BUNDLED_DATA} (the bundled sample), an absolute path inside the pod (on the checkpoint volume, "
        f"{CHECKPOINT_MOUNT}/..., or in the image), s3://bucket/prefix or {HF_SCHEME}name"
    )
    if not source:
        raise _error("dataSource", f"must name the corpus: {allowed}")
    if source.startswith(HF_SCHEME):
        if not source.removeprefix(HF_SCHEME).strip("/") or any(c.isspace() for c in source):
            raise _error("dataSource", f"must be {HF_SCHEME}name (a Hugging Face dataset), got {source!r}")
        return source
    if not source.lower().startswith("s3:"):
        bundled = source.rstrip("/") == BUNDLED_DATA or source.startswith(f"{BUNDLED_DATA}/")
        if not (bundled or source.startswith("/")):
            raise _error("dataSource", f"must be {allowed}; got {source!r}")
        return source
    try:
        parse_s3_url(source)
    except ConfigError:
        raise _error("dataSource", f"must be {S3_URL_SHAPE}, got {source!r}") from None
    if object_store is None:
        raise _error(
            "dataSource",
            "an s3:// source is read with the checkpoint object store's credentials: set checkpointS3Url "
            "and checkpointS3Secret (and checkpointS3Endpoint for a store other than Amazon S3)",
        )
    return source


def _trainer(values: Mapping[str, Any], on_k3s: bool) -> KubeflowTrainerArgs:
    """Where the Trainer chart comes from and the extra values it gets, checked before anything is installed."""
    version = str(values["trainerVersion"])
    chart = str(values["trainerChart"])
    if not chart.startswith(("oci://", "http://", "https://")):
        chart_file = Path(chart).expanduser().resolve() / "Chart.yaml"
        if not chart_file.is_file():
            raise _error(
                "trainerChart",
                f"must be an oci:// reference, a chart repository URL or a chart directory; {chart_file} does not exist",
            )
        metadata = yaml.safe_load(chart_file.read_text()) or {}
        found = (metadata.get("name"), str(metadata.get("version")))
        if found != (TRAINER_CHART_NAME, version):
            raise _error(
                "trainerChart",
                f"must hold {TRAINER_CHART_NAME} version {version} (trainerVersion), {chart_file} has {found[0]} {found[1]}",
            )
        chart = str(chart_file.parent)
    try:
        extra = yaml.safe_load(str(values["trainerChartValues"])) or {}
    except yaml.YAMLError as error:
        raise _error(
            "trainerChartValues",
            f"must be a YAML or JSON mapping of chart values: {' '.join(str(error).split())}",
        ) from None
    if not isinstance(extra, dict):
        raise _error("trainerChartValues", f"must be a YAML or JSON mapping of chart values, got {extra!r}")
    if values["trainJobProgress"]:
        extra = merged_values(TRAINJOB_STATUS_VALUES, extra)  # trainerChartValues may still turn it off
    return KubeflowTrainerArgs(version=version, ignore_webhook_failures=on_k3s, chart=chart, values=extra)


def _build_args(values: Mapping[str, Any], gpus_per_node: int) -> dict[str, str]:
    """The image's build arguments: imageBuildArgs (NAME=value), and baseImage as BASE_IMAGE; a CPU stack
    (gpusPerNode 0) that names no base builds on CPU_BUILD_ARGS' instead of pulling the CUDA one."""
    build_args = {}
    for item in values["imageBuildArgs"]:
        if not _BUILD_ARG.match(item):
            raise _error("imageBuildArgs", f"must be a list of NAME=value build arguments, got {item!r}")
        name, _, value = item.partition("=")
        build_args[name] = value
    if values["baseImage"]:
        if "BASE_IMAGE" in build_args:
            raise _error("baseImage", "and BASE_IMAGE in imageBuildArgs may not both be set")
        build_args["BASE_IMAGE"] = str(values["baseImage"])
    if not gpus_per_node and "BASE_IMAGE" not in build_args:
        build_args = {**CPU_BUILD_ARGS, **build_args}
    return build_args


def _registry(values: Mapping[str, Any], password: pulumi.Input[str] | None) -> RegistryCredentials | None:
    server, username = str(values["registryServer"]), str(values["registryUsername"])
    if password is None:
        if username:
            raise _error(
                "registryPassword",
                "must be set (pulumi config set --secret registryPassword ...) when registryUsername is set",
            )
        return None
    if not server or not username:
        raise _error(
            "registryServer",
            "registryServer and registryUsername must both be set when registryPassword is set",
        )
    return RegistryCredentials(server, username, password)


def _train_config(
    values: Mapping[str, Any],
    job_name: str,
    stack_keys: Mapping[str, tuple[str, str]],
    object_store: ObjectStore | None = None,
) -> TrainConfig:
    """The preset with the overrides and the stack's in-cluster paths (the checkpoints in object_store when
    given), validated by the trainer's own loader.

    stack_keys: further training keys the stack sets, each as (value, the stack key it comes from)."""
    preset = _one_of(values, "trainingPreset", available_presets())
    overrides = list(values["trainingOverrides"])
    paths = job_paths(job_name)
    if object_store is not None:
        paths["checkpoint.dir"] = object_store.url
    for override in overrides:
        key = override.partition("=")[0].strip()
        if key in paths:
            raise _error("trainingOverrides", f"may not set {key}: the stack sets it ({paths[key]})")
        if key in stack_keys:
            raise _error(
                "trainingOverrides", f"may not set {key}: the stack sets it from {stack_keys[key][1]}"
            )
    stack_settings = {**paths, **{key: value for key, (value, _) in stack_keys.items() if value}}
    try:
        config = load_config(
            PRESETS_DIR / f"{preset}.yaml", [*overrides, *(f"{k}={v}" for k, v in stack_settings.items())]
        )
    except ConfigError as error:
        raise _error("trainingOverrides", f"invalid training config for preset {preset!r}: {error}") from None
    return config


def _checkpoint_access_mode(values: Mapping[str, Any], cluster: ClusterArgs) -> str:
    """The checkpoint claim's access mode. Kubernetes cannot change it on a claim, and a replaced claim takes
    its checkpoints with it (the dynamic provisioners' reclaim policy is Delete), so the default follows what
    backs the claim, never nodeCount: a job resized from 2 nodes to 1 (or back) resumes from the same claim."""
    mode = _one_of(values, "checkpointAccessMode", ["", *CHECKPOINT_ACCESS_MODES])
    if not mode:
        named = bool(values["checkpointStorageClass"]) or cluster.shared_storage
        mode = "ReadWriteMany" if named else "ReadWriteOnce"
    if mode == "ReadWriteOnce" and cluster.node_count > 1:
        raise _error(
            "checkpointAccessMode",
            f"must be ReadWriteMany when nodeCount > 1 (every node mounts the claim), got {mode}",
        )
    return mode


def _grace_period(values: Mapping[str, Any], config: TrainConfig) -> int:
    """terminationGracePeriodSeconds, or with 0 the one derived from the model's parameter count."""
    derived = default_grace_period_seconds(config.parameter_count())
    seconds = _at_least(values, "terminationGracePeriodSeconds", 0)
    if seconds == 0:
        return derived
    if seconds < MIN_GRACE_PERIOD_SECONDS:
        raise _error(
            "terminationGracePeriodSeconds",
            f"must be 0 (derived from the model size: {derived} s for this config) or at least"
            f" {MIN_GRACE_PERIOD_SECONDS} seconds, got {seconds}",
        )
    return seconds


def parse_settings(
    stack_values: Mapping[str, Any],
    *,
    hf_token: pulumi.Input[str] | None = None,
    registry_password: pulumi.Input[str] | None = None,
    kubeconfig: str | None = None,
    stack: str = "",
    ask_api_server: bool = True,
) -> StackSettings:
    """Validated settings from the stack's config values (keys without the project prefix) and its secrets.

    kubeconfig: the `kubeconfig` secret's plaintext (clusterKind existing). An existing cluster's API server
    is asked last, after every other value has passed (unless ask_api_server is False: scripts/check_stack.py).
    stack: the label value naming this stack on what it installs into a cluster it shares (see
    gpu_operator.OWNER_LABEL).
    """
    values = resolve_values(stack_values)
    cluster = _cluster(values, kubeconfig)
    namespace = _matching(values, "namespace", _DNS_LABEL, _DNS_LABEL_RULE)
    job_name = _matching(values, "trainJobName", _DNS_LABEL, _DNS_LABEL_RULE)
    quantities = {
        key: _matching(values, key, _QUANTITY, "a Kubernetes quantity such as 2, 500m, 8Gi")
        for key in ("cpuPerNode", "memoryPerNode", "shmSize", "checkpointStorageSize")
    }
    # Keys that bound each other: /dev/shm is a memory-backed emptyDir, counted against the container's memory
    # limit, and Kubernetes sizes its tmpfs at the smaller of the two: a larger shmSize would only be cut.
    if quantity_bytes(quantities["shmSize"]) > quantity_bytes(quantities["memoryPerNode"]):
        raise _error(
            "shmSize",
            f"must be at most memoryPerNode ({quantities['memoryPerNode']}): /dev/shm is memory counted against"
            f" that limit, got {quantities['shmSize']}",
        )
    replicas = _at_least(values, "gpuTimeSlicingReplicas", 0)
    if replicas == 1:
        raise _error("gpuTimeSlicingReplicas", "must be 0 (off) or >= 2, got 1")
    if replicas and cluster.gpus_per_node > 1:
        raise _error(
            "gpuTimeSlicingReplicas",
            f"must be 0 when gpusPerNode > 1 (got {replicas} with gpusPerNode {cluster.gpus_per_node}): a pod"
            " asking for several time-sliced GPUs could get slices of one GPU; time-slice with gpusPerNode 1",
        )
    gpu_mode = _one_of(values, "gpuOperator", list(GPU_OPERATOR_MODES))
    registry = _registry(values, registry_password)
    push = bool(values["imagePush"])
    if cluster.existing is not None and not push:
        raise _error(
            "imagePush",
            "must be true when clusterKind is existing: the cluster pulls the image from imageRepository"
            " (the stack loads images only into nodes it created), got false",
        )
    repository = str(values["imageRepository"])
    if push and "." not in repository.split("/")[0] and ":" not in repository.split("/")[0]:
        raise _error(
            "imageRepository",
            f"must start with a registry host (e.g. ghcr.io/acme/trainer) when imagePush is true, got {repository!r}",
        )

    delivery: Delivery | None = None
    if not push and cluster.kind == "kind":
        delivery = KindLoad(cluster.name)
    elif not push and cluster.docker is not None:
        delivery = DockerNodesImport(cluster.name)
    elif not push:
        delivery = K3sImport(cluster.remote)
    metrics_port = _port(values, "metricsPort")
    if values["prometheusPodMonitor"] and not metrics_port:
        raise _error("prometheusPodMonitor", "needs metricsPort > 0 (the port the PodMonitor scrapes)")
    mlflow_server = None
    # Keys of the training config the stack owns: (value, where it comes from); an empty value sets nothing.
    stack_keys = {"output.metrics_port": (str(metrics_port or ""), "metricsPort")}
    if values["mlflowServer"]:
        mlflow_server = MlflowServerArgs(
            namespace=namespace,
            storage_size=_matching(
                values, "mlflowStorageSize", _QUANTITY, "a Kubernetes quantity such as 5Gi"
            ),
            storage_class=str(values["checkpointStorageClass"]),
        )
        stack_keys["output.tracking"] = ("mlflow", "mlflowServer")
        stack_keys["output.tracking_uri"] = (tracking_uri(namespace), "mlflowServer")
    priority_class, priority = _priority(values, job_name)
    object_store = _object_store(values, job_name)
    stack_keys["data.path"] = (_data_source(values, object_store), "dataSource")
    train_config = _train_config(values, job_name, stack_keys, object_store)
    job = TrainingJobArgs(
        job_name=job_name,
        num_nodes=cluster.node_count,
        gpus_per_node=cluster.gpus_per_node,
        cpu_per_node=quantities["cpuPerNode"],
        memory_per_node=quantities["memoryPerNode"],
        shm_size=quantities["shmSize"],
        max_restarts=_at_least(values, "maxRestarts", 0),
        checkpoint_size=quantities["checkpointStorageSize"],
        checkpoint_storage_class=str(values["checkpointStorageClass"]),
        checkpoint_access_mode=_checkpoint_access_mode(values, cluster),
        shared_storage=cluster.shared_storage,
        train_config=yaml.safe_dump(train_config.to_dict(), sort_keys=False),
        pod_names_timeout_seconds=_at_least(values, "podNamesTimeoutSeconds", 0),
        termination_grace_period_seconds=_grace_period(values, train_config),
        metrics_port=metrics_port,
        priority_class=priority_class,
        priority=priority,
        object_store=object_store,
    )
    monitoring = None
    if metrics_port:
        monitoring = MonitoringArgs(
            namespace=namespace,
            job_name=job_name,
            port=metrics_port,
            rank0_labels=rank0_labels(job_name),
            pod_monitor=bool(values["prometheusPodMonitor"]),
        )
    if cluster.existing is not None and ask_api_server:
        try:
            check_api_server(cluster.existing)
            jobset = read_custom_resource_definition(cluster.existing, JOBSET_CRD)
        except KubeconfigError as error:
            raise _error(error.key, error.problem) from None
        # Helm never upgrades a CRD the cluster already has: an older JobSet's would prune what the runtime needs.
        gaps = (
            jobset_schema_gaps(jobset, training_runtime_spec(job, "image")["template"]["spec"])
            if jobset
            else []
        )
        if gaps:
            raise _error(
                cluster.existing.source_key,
                f"the cluster's {JOBSET_CRD} CRD lacks {'; '.join(gaps)}, which the training runtime needs"
                f" (JobSet {JOBSET_RELEASE}, what the Trainer chart brings; Helm never upgrades a CRD the cluster"
                f" has): upgrade JobSet there, its CRD with kubectl apply --server-side --force-conflicts -f"
                f" {JOBSET_CRD_URL}",
            )
    gpu = None
    if cluster.gpus_per_node:
        if cluster.kind == "kind" and not values["hostHasGpuDriver"]:
            raise _error(
                "hostHasGpuDriver",
                "must be true when clusterKind is kind: the kind node uses this machine's NVIDIA driver, and the"
                " operator's driver container cannot load one from inside a node container",
            )
        operator = GpuOperatorArgs(
            version=str(values["gpuOperatorVersion"]),
            cluster_kind=cluster.kind,
            install_driver=not values["hostHasGpuDriver"],
            time_slicing_replicas=replicas,
            owner=stack,
        )
        gpu = _gpu_setup(gpu_mode, operator, cluster, ask_api_server)
    return StackSettings(
        cluster=cluster,
        gpu=gpu,
        trainer=_trainer(values, on_k3s=cluster.kind == "k3s"),
        access=AccessArgs(
            namespace=namespace,
            service_account=TRAINING_SERVICE_ACCOUNT,
            config_map=job.config_map,
            hf_token=hf_token,
            registry=registry,
        ),
        image=TrainerImageArgs(
            repository=repository,
            context=REPO_ROOT,
            platform=str(values["imagePlatform"]),
            push=push,
            registry=registry,
            delivery=delivery,
            build_args=_build_args(values, cluster.gpus_per_node),
        ),
        job=job,
        monitoring=monitoring,
        mlflow_server=mlflow_server,
    )


def stack_values() -> dict[str, Any]:
    """The stack's config values under the project's namespace, as the engine passed them."""
    from pulumi.runtime import config as runtime_config

    prefix = f"{PROJECT}:"
    merged = {**runtime_config.get_config_env(), **runtime_config.CONFIG.get()}
    return {key[len(prefix) :]: value for key, value in merged.items() if key.startswith(prefix)}


def _is_secret(key: str) -> bool:
    """Whether the stack holds the config key (without the project prefix) as a secret."""
    from pulumi.runtime import config as runtime_config

    # The language host lists the secret keys in PULUMI_CONFIG_SECRET_KEYS (pulumi v3.259.0,
    # sdk/python/cmd/pulumi-language-python/main.go); the SDK's mocks keep them in the runtime config.
    full_key = f"{PROJECT}:{key}"
    return full_key in runtime_config.get_config_secret_keys_env() or runtime_config.is_config_secret(
        full_key
    )


def load_settings() -> StackSettings:
    """Settings for the running stack: its config values and its optional secrets."""
    config = pulumi.Config(PROJECT)
    raw = stack_values()
    kubeconfig = raw.get("kubeconfig")
    if kubeconfig is not None and not _is_secret("kubeconfig"):
        raise _error("kubeconfig", KUBECONFIG_NOT_SECRET)
    values = {key: value for key, value in raw.items() if key not in SECRET_KEYS}
    return parse_settings(
        values,
        hf_token=config.get_secret("hfToken"),
        registry_password=config.get_secret("registryPassword"),
        kubeconfig=kubeconfig,
        stack=_label_value(f"{pulumi.get_project()}.{pulumi.get_stack()}"),
    )


def _label_value(text: str) -> str:
    """text as a Kubernetes label value: at most 63 characters of [A-Za-z0-9_.-], alphanumeric at both ends."""
    return re.sub(r"[^A-Za-z0-9_.-]", "-", text)[:63].strip("-_.")
