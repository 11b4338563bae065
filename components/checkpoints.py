"""Where the job's checkpoints live (the claim or an object store), and the grace period a preempted pod has
to finish its step and save (else it is SIGKILLed and the work since the last checkpoint is lost)."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

from components.settings import Values, at_least, error, matching, one_of
from trainer.config import S3_URL_SHAPE, ConfigError, parse_s3_url

CHECKPOINT_MOUNT = "/mnt/checkpoints"
CHECKPOINT_ACCESS_MODES = ("ReadWriteMany", "ReadWriteOnce")

# Measured on an NVIDIA H200 host on 2026-11-30 (docs/benchmarks.md): GPT-2 124M saved in 3.4-4.7 s with its
# AdamW state, at most 2.7 s per GB written, checksummed and published.
SAVE_SECONDS_PER_GB = 2.7
# ZeRO >= 1 with bf16: bf16 weights (2) beside fp32 master weights and two fp32 AdamW moments (12).
CHECKPOINT_BYTES_PER_PARAMETER = 14
# A stop may wait for a background write in flight before its own save.
SAVES_PER_STOP = 2
# Volumes slower than that host's local disk (network file systems, shared claims).
VOLUME_SLOWDOWN = 3
# The step in flight, the stop agreed by every rank, process groups torn down, torchrun and launch exiting.
GRACE_FLOOR_SECONDS = 60
# torchrun SIGKILLs its workers this long before Kubernetes would, so `launch` still collects their exit codes.
SHUTDOWN_MARGIN_SECONDS = 10
MIN_GRACE_PERIOD_SECONDS = 2 * SHUTDOWN_MARGIN_SECONDS
# A TrainJob's delete waits out every pod's grace period: pulumi-kubernetes' 10 minutes, or grace + margin.
PROVIDER_DELETE_TIMEOUT_SECONDS = 600
DELETE_MARGIN_SECONDS = 300

# The AWS SDK's variables the trainer's S3 client (boto3) reads; the Secret's keys have the same names.
S3_SECRET_KEYS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")
S3_OPTIONAL_SECRET_KEYS = ("AWS_SESSION_TOKEN",)
_DNS_SUBDOMAIN = re.compile(r"^(?=.{1,253}$)[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_ENDPOINT = re.compile(r"^https?://[^\s/?#@]+(/[^\s?#]*)?$")
_REGION = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


def default_grace_period_seconds(parameters: int) -> int:
    """The floor plus SAVES_PER_STOP slowed-down saves of the checkpoint. GPT-2 124M: 89 s; 1.5B: 414 s."""
    gigabytes = parameters * CHECKPOINT_BYTES_PER_PARAMETER / 1e9
    return math.ceil(GRACE_FLOOR_SECONDS + SAVES_PER_STOP * VOLUME_SLOWDOWN * SAVE_SECONDS_PER_GB * gigabytes)


def train_job_delete_timeout_seconds(grace_period_seconds: int) -> int:
    return max(PROVIDER_DELETE_TIMEOUT_SECONDS, grace_period_seconds + DELETE_MARGIN_SECONDS)


def torchrun_shutdown_timeout(grace_period_seconds: int) -> int:
    return grace_period_seconds - SHUTDOWN_MARGIN_SECONDS


def grace_period(values: Values, parameters: int) -> int:
    """terminationGracePeriodSeconds, or with 0 the one derived from the model's parameter count."""
    derived = default_grace_period_seconds(parameters)
    seconds = at_least(values, "terminationGracePeriodSeconds", 0)
    if seconds == 0:
        return derived
    if seconds < MIN_GRACE_PERIOD_SECONDS:
        raise error(
            "terminationGracePeriodSeconds",
            f"must be 0 (derived from the model size: {derived} s for this config) or at least"
            f" {MIN_GRACE_PERIOD_SECONDS} seconds, got {seconds}",
        )
    return seconds


def job_paths(job_name: str, checkpoint_url: str = "") -> dict[str, str]:
    """The training config's storage keys; checkpoints under checkpoint_url (s3://...) when given. The token
    shards are shared by every job on the volume (keyed by source and encoding)."""
    root = f"{CHECKPOINT_MOUNT}/{job_name}"
    checkpoints = f"{checkpoint_url.rstrip('/')}/{job_name}" if checkpoint_url else root
    return {
        "checkpoint.dir": f"{checkpoints}/checkpoints",
        "output.dir": f"{root}/output",
        "data.cache_dir": f"{CHECKPOINT_MOUNT}/tokens",
    }


def access_mode(values: Values, node_count: int, shared_storage: bool) -> str:
    """Kubernetes cannot change it and a replaced claim takes its checkpoints with it, so the default follows
    what backs the claim, never nodeCount: a resized job resumes from the same claim."""
    mode = one_of(values, "checkpointAccessMode", ["", *CHECKPOINT_ACCESS_MODES])
    if not mode:
        mode = "ReadWriteMany" if values["checkpointStorageClass"] or shared_storage else "ReadWriteOnce"
    if mode == "ReadWriteOnce" and node_count > 1:
        raise error(
            "checkpointAccessMode",
            f"must be ReadWriteMany when nodeCount > 1 (every node mounts the claim), got {mode}",
        )
    return mode


@dataclass(frozen=True)
class ObjectStore:
    """Checkpoints in an S3-compatible object store (trainer.checkpoint.s3) rather than on the claim."""

    url: str  # the job's checkpoint.dir: s3://bucket/prefix/<job>/checkpoints
    secret: str  # in the namespace, with S3_SECRET_KEYS (and optionally S3_OPTIONAL_SECRET_KEYS)
    endpoint: str  # AWS_ENDPOINT_URL_S3; empty: Amazon S3
    region: str  # AWS_REGION, the requests are signed for

    def environment(self) -> list[dict[str, Any]]:
        """Credentials by secretKeyRef (never a literal), endpoint and region."""
        env: list[dict[str, Any]] = [
            {"name": key, "valueFrom": {"secretKeyRef": {"name": self.secret, "key": key, **optional}}}
            for keys, optional in ((S3_SECRET_KEYS, {}), (S3_OPTIONAL_SECRET_KEYS, {"optional": True}))
            for key in keys
        ]
        if self.endpoint:
            env.append({"name": "AWS_ENDPOINT_URL_S3", "value": self.endpoint})
        env.append({"name": "AWS_REGION", "value": self.region})
        return env


def object_store(values: Values, job_name: str) -> ObjectStore | None:
    """None keeps them on the claim (checkpointS3Url empty)."""
    region = matching(values, "checkpointS3Region", _REGION, "an S3 region name such as us-east-1")
    url = str(values["checkpointS3Url"]).strip()
    if not url:
        for key in ("checkpointS3Secret", "checkpointS3Endpoint"):
            if values[key]:
                raise error(key, "applies only with checkpointS3Url (s3://bucket/prefix), which is empty")
        return None
    try:
        parse_s3_url(url)
    except ConfigError:
        raise error("checkpointS3Url", f"must be {S3_URL_SHAPE}, got {url!r}") from None
    secret = str(values["checkpointS3Secret"])
    if not secret:
        raise error(
            "checkpointS3Secret",
            f"must name the Secret in the namespace that holds {' and '.join(S3_SECRET_KEYS)} when"
            " checkpointS3Url is set",
        )
    matching(values, "checkpointS3Secret", _DNS_SUBDOMAIN, "a Secret name (a DNS-1123 subdomain)")
    endpoint = str(values["checkpointS3Endpoint"])
    if endpoint:
        rule = "an http:// or https:// URL such as http://minio.storage.svc:9000 (no credentials in it)"
        matching(values, "checkpointS3Endpoint", _ENDPOINT, rule)
    return ObjectStore(job_paths(job_name, url)["checkpoint.dir"], secret, endpoint, region)
