"""The training job's Args from the stack's config: resources, priority, the corpus and the training config
(the preset with the overrides, checked by the trainer's own loader)."""

from __future__ import annotations

from collections.abc import Mapping

import yaml

from components import checkpoints, settings
from components.checkpoints import CHECKPOINT_MOUNT, ObjectStore, job_paths
from components.settings import Values, error
from components.training_job import PREEMPTION_POLICIES, PriorityClassSpec, TrainingJobArgs
from trainer.config import S3_URL_SHAPE, ConfigError, TrainConfig, load_config, parse_s3_url

PRESETS_DIR = settings.REPO_ROOT / "trainer" / "configs"
BUNDLED_DATA = "trainer/data"  # the sample in the image, relative to its working directory (/app)
HF_SCHEME = "hf://"  # trainer.sources.HF_SCHEME (not imported: it needs numpy, which the stack's venv lacks)
# Kubernetes reserves priorities above one billion (and the system- prefix) for system classes.
MAX_USER_PRIORITY = 1_000_000_000
MIN_PRIORITY = -2_147_483_648


def available_presets() -> list[str]:
    return sorted(path.stem for path in PRESETS_DIR.glob("*.yaml"))


def _priority(values: Values, job_name: str) -> tuple[str, PriorityClassSpec | None]:
    """The PriorityClass name, and its spec when the stack creates it (priorityClassValue != 0)."""
    name = str(values["priorityClassName"])
    value = int(values["priorityClassValue"])
    policy = settings.one_of(values, "priorityPreemptionPolicy", list(PREEMPTION_POLICIES))
    if name and not settings.DNS_LABEL.fullmatch(name):
        raise error("priorityClassName", f"must be {settings.DNS_LABEL_RULE}, got {name!r}")
    if value == 0:
        if policy != PREEMPTION_POLICIES[0]:
            raise error(
                "priorityPreemptionPolicy",
                "applies only to a class the stack creates (priorityClassValue != 0); an existing class keeps its own",
            )
        return name, None
    if not MIN_PRIORITY <= value <= MAX_USER_PRIORITY:
        raise error(
            "priorityClassValue",
            f"must be between {MIN_PRIORITY} and {MAX_USER_PRIORITY} (higher values are reserved for system classes), got {value}",
        )
    name = name or f"trainstack-{job_name}"
    if name.startswith("system-"):
        raise error(
            "priorityClassName",
            f"must not start with 'system-' (reserved) for a class the stack creates, got {name!r}",
        )
    return name, PriorityClassSpec(value=value, preemption_policy=policy)


def _data_source(values: Values, object_store: ObjectStore | None) -> str:
    """One a pod can read (trainer.sources.resolve_source); s3:// is read with the checkpoint store's Secret."""
    source = str(values["dataSource"]).strip()
    allowed = (
        f"{BUNDLED_DATA} (the bundled sample), an absolute path inside the pod (on the checkpoint volume, "
        f"{CHECKPOINT_MOUNT}/..., or in the image), s3://bucket/prefix or {HF_SCHEME}name"
    )
    if not source:
        raise error("dataSource", f"must name the corpus: {allowed}")
    if source.startswith(HF_SCHEME):
        if not source.removeprefix(HF_SCHEME).strip("/") or any(c.isspace() for c in source):
            raise error("dataSource", f"must be {HF_SCHEME}name (a Hugging Face dataset), got {source!r}")
        return source
    if not source.lower().startswith("s3:"):
        bundled = source.rstrip("/") == BUNDLED_DATA or source.startswith(f"{BUNDLED_DATA}/")
        if not (bundled or source.startswith("/")):
            raise error("dataSource", f"must be {allowed}; got {source!r}")
        return source
    try:
        parse_s3_url(source)
    except ConfigError:
        raise error("dataSource", f"must be {S3_URL_SHAPE}, got {source!r}") from None
    if object_store is None:
        raise error(
            "dataSource",
            "an s3:// source is read with the checkpoint object store's credentials: set checkpointS3Url "
            "and checkpointS3Secret (and checkpointS3Endpoint for a store other than Amazon S3)",
        )
    return source


def _train_config(
    values: Values, job_name: str, stack_keys: Mapping[str, tuple[str, str]], store: ObjectStore | None
) -> TrainConfig:
    """The preset, the overrides and the stack's paths and keys (value, stack key), by the trainer's loader."""
    preset = settings.one_of(values, "trainingPreset", available_presets())
    overrides = list(values["trainingOverrides"])
    paths = job_paths(job_name)
    if store is not None:
        paths["checkpoint.dir"] = store.url
    sources = {
        **{key: f"from {source}" for key, (_, source) in stack_keys.items()},
        **{key: f"({path})" for key, path in paths.items()},
    }
    for override in overrides:
        key = override.partition("=")[0].strip()
        if key in sources:
            raise error("trainingOverrides", f"may not set {key}: the stack sets it {sources[key]}")
    stack_settings = {**paths, **{key: value for key, (value, _) in stack_keys.items() if value}}
    try:
        return load_config(
            PRESETS_DIR / f"{preset}.yaml", [*overrides, *(f"{k}={v}" for k, v in stack_settings.items())]
        )
    except ConfigError as failure:
        raise error(
            "trainingOverrides", f"invalid training config for preset {preset!r}: {failure}"
        ) from None


def quantities(values: Values) -> dict[str, str]:
    found = {
        key: settings.matching(values, key, settings.QUANTITY, settings.QUANTITY_RULE)
        for key in ("cpuPerNode", "memoryPerNode", "shmSize", "checkpointStorageSize")
    }
    if settings.quantity_bytes(found["shmSize"]) > settings.quantity_bytes(found["memoryPerNode"]):
        raise error(
            "shmSize",
            f"must be at most memoryPerNode ({found['memoryPerNode']}): /dev/shm is memory counted against"
            f" that limit, got {found['shmSize']}",
        )
    return found


def job_args(
    values: Values,
    *,
    node_count: int,
    gpus_per_node: int,
    shared_storage_path: str,
    metrics_port: int,
    stack_keys: Mapping[str, tuple[str, str]],
) -> TrainingJobArgs:
    """shared_storage_path: "" for none; stack_keys: training keys other components set (value, stack key)."""
    name = settings.matching(values, "trainJobName", settings.DNS_LABEL, settings.DNS_LABEL_RULE)
    sizes = quantities(values)
    priority_class, priority = _priority(values, name)
    store = checkpoints.object_store(values, name)
    keys = {
        "output.metrics_port": (str(metrics_port or ""), "metricsPort"),
        **stack_keys,
        "data.path": (_data_source(values, store), "dataSource"),
    }
    train_config = _train_config(values, name, keys, store)
    return TrainingJobArgs(
        job_name=name,
        num_nodes=node_count,
        gpus_per_node=gpus_per_node,
        cpu_per_node=sizes["cpuPerNode"],
        memory_per_node=sizes["memoryPerNode"],
        shm_size=sizes["shmSize"],
        max_restarts=settings.at_least(values, "maxRestarts", 0),
        checkpoint_size=sizes["checkpointStorageSize"],
        checkpoint_storage_class=str(values["checkpointStorageClass"]),
        checkpoint_access_mode=checkpoints.access_mode(values, node_count, bool(shared_storage_path)),
        shared_storage_path=shared_storage_path,
        train_config=yaml.safe_dump(train_config.to_dict(), sort_keys=False),
        pod_names_timeout_seconds=settings.at_least(values, "podNamesTimeoutSeconds", 0),
        termination_grace_period_seconds=checkpoints.grace_period(values, train_config.parameter_count()),
        metrics_port=metrics_port,
        priority_class=priority_class,
        priority=priority,
        object_store=store,
    )
