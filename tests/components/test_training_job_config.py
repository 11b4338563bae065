"""The training job's config: the preset and overrides, checkpoints (claim, access mode, object store, grace
period), the corpus, resources and priority, as the stack's values give them."""

from __future__ import annotations

import pytest
import yaml

from components.checkpoints import ObjectStore
from components.cluster.provider import SHARED_STORAGE_PATH
from components.settings import StackConfigError
from components.stack import parse_settings
from components.training_job_config import available_presets


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


def test_an_override_of_a_stack_path_is_refused_whatever_its_value_holds() -> None:
    with pytest.raises(
        StackConfigError, match=r"^trainstack:trainingOverrides: may not set checkpoint\.dir: "
    ):
        parse_settings({"trainingOverrides": '["checkpoint.dir=/data/a=b"]'})


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


def test_a_created_priority_class_is_named_after_the_job() -> None:
    """Two stacks on one cluster must not share a cluster-scoped PriorityClass by accident."""
    job = parse_settings({"priorityClassValue": "1000", "trainJobName": "gpt-small"}).job
    assert job.priority_class == "trainstack-gpt-small"


@pytest.mark.parametrize("policy", ["PreemptLowerPriority", "Never"])
def test_a_created_priority_class_has_the_value_and_preemption_policy_asked(policy: str) -> None:
    job = parse_settings({"priorityClassValue": "1000", "priorityPreemptionPolicy": policy}).job
    assert job.priority is not None
    assert (job.priority.value, job.priority.preemption_policy) == (1000, policy)


def test_restarts_and_shared_storage_reach_the_job() -> None:
    job = parse_settings({"maxRestarts": "3", "nodeCount": "2"}).job
    assert (job.max_restarts, job.shared_storage_path) == (3, SHARED_STORAGE_PATH)
    assert parse_settings({"maxRestarts": "0"}).job.max_restarts == 0  # no restart: the first failure ends it


def test_the_pods_training_config_keeps_the_sections_in_the_configs_order() -> None:
    """The ConfigMap a user reads (kubectl get configmap -o yaml): model, data, train, checkpoint, output,
    each key in the schema's order, as `python -m trainer print-config` prints it."""
    text = parse_settings({}).job.train_config
    assert list(yaml.safe_load(text)) == ["model", "data", "train", "checkpoint", "output"]
    assert text.startswith("model:\n  preset: ") and "\n  n_layer: " in text


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
            " or '-', a letter or digit at each end, no '..', not an IP address; prefix: '/'-separated names,"
            " none empty, '.' or '..'), got 's3://Team_Bucket/x'",
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
            "trainstack:dataSource: an s3:// source is read with the checkpoint object store's credentials: set"
            " checkpointS3Url and checkpointS3Secret (and checkpointS3Endpoint for a store other than Amazon S3)",
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
    for source in ("hf://", "hf:///", "hf://org/ name"):  # no dataset name, or a space in it
        with pytest.raises(StackConfigError) as error:
            parse_settings({"dataSource": source})
        assert str(error.value) == (
            f"trainstack:dataSource: must be hf://name (a Hugging Face dataset), got {source!r}"
        )
