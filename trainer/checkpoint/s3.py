"""Checkpoints in an S3-compatible store (boto3's AWS_* variables): run <run> uploads step_N/<run>/shard_*.pt,
then publishes step_N/manifest.json by a conditional PUT (no rename); a run lives while its lease is fresh."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
import uuid
import weakref
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any

from boto3.s3.transfer import TransferConfig
from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError, PartialCredentialsError

from trainer.checkpoint import s3_lease
from trainer.checkpoint.layout import (
    MANIFEST,
    TAG_PATTERN,
    CheckpointError,
    abandoned,
    file_record,
    files_problem,
    run_gone,
    unsupported,
)
from trainer.config import ConfigError, parse_s3_url
from trainer.shared_files import sha256_of
from trainer.sources import s3_client

# Multipart above this size, in parts of it (S3: 5 MiB to 10,000 parts a file: shards up to 640 GB).
MULTIPART_CHUNK_BYTES = 64 * 1024 * 1024
TRANSFER = TransferConfig(
    multipart_threshold=MULTIPART_CHUNK_BYTES, multipart_chunksize=MULTIPART_CHUNK_BYTES
)
DATA_PATTERN = re.compile(r"^(?P<tag>step_\d+)/(?P<run>[0-9a-f]+)/")
OBJECTS_PATTERN = re.compile(r"[0-9a-f]+/")  # a manifest's "objects": its files' run prefix
SHA256_PATTERN = re.compile(r"[0-9a-f]{64}")
STAGING_PATTERN = re.compile(r"^(?P<tag>step_\d+)\.tmp-(?P<run>[0-9a-f]+)$")
# A conditional write refused (412), or a concurrent one (409, Amazon S3).
REFUSED_CONDITION = {"PreconditionFailed", "ConditionalRequestConflict"}
NOT_FOUND = {"404", "NoSuchKey", "NotFound"}


class S3Error(Exception):
    """The store refused an operation it answered without an HTTP error (a key of a DeleteObjects)."""


def error_code(error: ClientError) -> str:
    return str(error.response.get("Error", {}).get("Code", ""))


class S3Storage:
    def __init__(self, url: str) -> None:
        """ConfigError (one line) for a URL that is not s3://bucket/prefix or an endpoint URL boto3 rejects."""
        self.url = url.rstrip("/")
        self.bucket, self.prefix = parse_s3_url(url)
        self.client = s3_client(f"checkpoint.dir: {self.url}")
        self.endpoint = str(self.client.meta.endpoint_url)
        self.downloads: Path | None = None
        self.manifests: dict[str, dict[str, Any]] = {}

    def key(self, name: str) -> str:
        return f"{self.prefix}/{name}" if self.prefix else name

    def relative(self, key: str) -> str:
        return key[len(self.prefix) + 1 :] if self.prefix else key

    def data_prefix(self, name: str) -> str:
        """The names' prefix of a staging name's files: step_N.tmp-<run> -> step_N/<run>/."""
        match = STAGING_PATTERN.match(name)
        if match is None:
            raise ValueError(f"not a staging name: {name!r}")
        return f"{match['tag']}/{match['run']}/"

    def describe(self, name: str) -> str:
        if STAGING_PATTERN.match(name):
            name = self.data_prefix(name)
        return f"s3://{self.bucket}/{self.key(name)}"

    def check(self) -> None:
        """ConfigError (URL, endpoint, what failed) unless the credentials may list, write and delete there."""
        probe = self.key(f".probe-{uuid.uuid4().hex}")
        try:
            self.client.list_objects_v2(Bucket=self.bucket, Prefix=self.key(""), MaxKeys=1)
            self.client.put_object(Bucket=self.bucket, Key=probe, Body=b"")
            self.client.delete_object(Bucket=self.bucket, Key=probe)
        except (NoCredentialsError, PartialCredentialsError):
            problem = "no credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"
        except ClientError as error:
            code, message = error_code(error), error.response.get("Error", {}).get("Message", "")
            problem = {
                "NoSuchBucket": "the bucket does not exist",
                "AccessDenied": "access denied: the credentials may not list and write there",
            }.get(code, f"the store refused the credentials or the request ({code}: {message})")
        except BotoCoreError as error:
            problem = f"cannot reach the store: {error}"
        else:
            return
        raise ConfigError(f"checkpoint.dir: {self.url} (endpoint {self.endpoint}): {problem}")

    def objects(self) -> tuple[list[dict[str, Any]], float | None]:
        """Every object under the prefix (Key relative to it) and the store's clock (its Date header)."""
        found: list[dict[str, Any]] = []
        now: float | None = None
        pages = self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=self.key(""))
        for page in pages:
            date = page.get("ResponseMetadata", {}).get("HTTPHeaders", {}).get("date")
            if date and now is None:
                now = parsedate_to_datetime(date).timestamp()
            for item in page.get("Contents", []):
                found.append({**item, "Key": self.relative(item["Key"])})
        return found, now

    def sizes(self, prefix: str) -> dict[str, int]:
        pages = self.client.get_paginator("list_objects_v2").paginate(
            Bucket=self.bucket, Prefix=self.key(prefix)
        )
        start = len(self.key(prefix))
        return {item["Key"][start:]: int(item["Size"]) for page in pages for item in page.get("Contents", [])}

    def published(self) -> list[tuple[int, str]]:
        found = []
        for item in self.objects()[0]:
            tag, _, rest = item["Key"].partition("/")
            match = TAG_PATTERN.match(tag)
            if match and rest == MANIFEST:
                found.append((int(match.group(1)), tag))
        return sorted(found, reverse=True)

    def head(self, key: str) -> dict[str, Any] | None:
        """The object's metadata; None if there is none."""
        try:
            return dict(self.client.head_object(Bucket=self.bucket, Key=key))
        except ClientError as error:
            if error_code(error) in NOT_FOUND:
                return None
            raise

    def published_at(self, tag: str) -> float:
        head = self.head(self.key(f"{tag}/{MANIFEST}"))
        if head is None:
            raise FileNotFoundError(self.describe(f"{tag}/{MANIFEST}"))
        return float(head["LastModified"].timestamp())

    def read_manifest(self, tag: str) -> tuple[dict[str, Any] | None, str | None]:
        try:
            body = self.client.get_object(Bucket=self.bucket, Key=self.key(f"{tag}/{MANIFEST}"))["Body"]
            manifest = json.loads(body.read())
        except ClientError as error:
            if error_code(error) not in NOT_FOUND:
                raise
            return None, f"no readable {MANIFEST} (not found)"
        except ValueError as error:
            return None, f"no readable {MANIFEST} ({type(error).__name__})"
        if not isinstance(manifest, dict) or not isinstance(manifest.get("files"), dict):
            return None, f"no readable {MANIFEST} (no files)"
        if unsupported(manifest):
            return None, f"it is {unsupported(manifest)}"
        return manifest, None

    def manifest(self, tag: str) -> dict[str, Any] | None:
        return self.read_manifest(tag)[0]

    def files_of(self, tag: str, manifest: dict[str, Any]) -> str:
        objects = str(manifest.get("objects", ""))
        if not OBJECTS_PATTERN.fullmatch(objects):
            raise CheckpointError(f'{self.describe(tag)}/{MANIFEST}: no valid "objects" prefix')
        return f"{tag}/{objects}"

    def verify(self, tag: str) -> tuple[dict[str, Any] | None, str | None]:
        """The files are downloaded to check them, and kept for read_shard."""
        manifest, problem = self.read_manifest(tag)
        if manifest is None:
            return None, problem
        try:
            prefix = self.files_of(tag, manifest)
        except CheckpointError as error:
            return None, str(error)
        files = manifest["files"]

        def sha256(name: str) -> str:  # the manifest's if the download matches it
            matched = self.download(f"{prefix}{name}", files[name]["sha256"]) is not None
            return str(files[name]["sha256"]) if matched else "another"

        problem = files_problem(files, self.sizes(prefix).get, sha256)
        if problem:
            return None, problem
        self.manifests[tag] = manifest
        return manifest, None

    def download(self, name: str, sha256: str) -> Path | None:
        """Kept if it matches sha256, else None; None if sha256 is not 64 hex digits (it names a path)."""
        if not SHA256_PATTERN.fullmatch(str(sha256)):
            return None
        if self.downloads is None:
            self.downloads = Path(tempfile.mkdtemp(prefix="trainstack-checkpoint-"))
            weakref.finalize(self, shutil.rmtree, self.downloads, True)
        kept = self.downloads / f"{hashlib.sha256(name.encode()).hexdigest()}-{sha256}"
        if kept.is_file():
            return kept
        partial = self.downloads / f"{uuid.uuid4().hex}.part"
        try:
            self.client.download_file(self.bucket, self.key(name), str(partial), Config=TRANSFER)
        except ClientError as error:
            partial.unlink(missing_ok=True)
            if error_code(error) in NOT_FOUND:  # deleted since it was listed
                return None
            raise
        if sha256_of(partial) != sha256:
            partial.unlink()
            return None
        partial.rename(kept)
        return kept

    def local_copy(self, tag: str, name: str) -> Path:
        manifest = self.manifests.get(tag) or self.manifest(tag)
        if manifest is None:
            raise CheckpointError(f"{self.describe(tag)}: no readable {MANIFEST}")
        self.manifests[tag] = manifest
        path = self.download(f"{self.files_of(tag, manifest)}{name}", manifest["files"][name]["sha256"])
        if path is None:
            raise CheckpointError(f"{self.describe(tag)}: {name} is missing or does not match its checksum")
        return path

    def read_shard(self, tag: str, name: str) -> dict[str, Any]:
        import torch  # only where a shard is written or read: never in `launch`

        return torch.load(self.local_copy(tag, name), map_location="cpu", mmap=True, weights_only=True)

    def write_shard(self, staging: str, name: str, state: dict[str, Any]) -> dict[str, Any]:
        if self.downloads is not None:  # the run is past resuming: the files it loaded are not needed
            for path in self.downloads.iterdir():
                path.unlink(missing_ok=True)
        descriptor, spooled = tempfile.mkstemp(prefix="trainstack-shard-", suffix=".pt")
        os.close(descriptor)
        try:
            import torch

            torch.save(state, spooled)
            record = file_record(Path(spooled))
            key = self.key(f"{self.data_prefix(staging)}{name}")
            self.client.upload_file(spooled, self.bucket, key, Config=TRANSFER)
        finally:
            os.unlink(spooled)
        return record

    def staged_problem(self, staging: str, files: dict[str, Any]) -> str | None:
        return files_problem(files, self.sizes(self.data_prefix(staging)).get, None)

    def publish(self, staging: str, tag: str, manifest: dict[str, Any]) -> bool:
        """upstream: S3 User Guide "How to prevent object overwrites with conditional writes" @ 2024-08
        upstream: versitygw backend/posix/posix.go PutObject (precondition under the publish lock) @ v1.8.0"""
        run = STAGING_PATTERN.match(staging)
        assert run is not None
        body = json.dumps({**manifest, "objects": f"{run['run']}/"}, indent=1, sort_keys=True).encode()
        key = self.key(f"{tag}/{MANIFEST}")
        try:
            self.client.put_object(Bucket=self.bucket, Key=key, Body=body, IfNoneMatch="*")
        except ClientError as error:
            if error_code(error) in REFUSED_CONDITION:
                return False
            if error_code(error) != "NotImplemented":
                raise
            if self.head(key) is not None:  # a store without conditional writes: look, then write
                return False
            self.client.put_object(Bucket=self.bucket, Key=key, Body=body)
        return True

    def delete(self, names: list[str]) -> None:
        """1,000 a request (DeleteObjects' most); a per-key Error raises."""
        for start in range(0, len(names), 1000):
            batch = [{"Key": self.key(name)} for name in names[start : start + 1000]]
            answer = self.client.delete_objects(Bucket=self.bucket, Delete={"Objects": batch, "Quiet": True})
            for error in answer.get("Errors", []):
                raise S3Error(f"cannot delete s3://{self.bucket}/{error.get('Key')}: {error.get('Code')}")

    def delete_under(self, prefix: str) -> None:
        self.delete([f"{prefix}{name}" for name in self.sizes(prefix)])
        for upload in self.uploads(prefix):
            self.abort(upload)

    def uploads(self, prefix: str = "") -> list[dict[str, Any]]:
        pages = self.client.get_paginator("list_multipart_uploads").paginate(
            Bucket=self.bucket, Prefix=self.key(prefix)
        )
        return [upload for page in pages for upload in page.get("Uploads", [])]

    def abort(self, upload: dict[str, Any]) -> None:
        try:
            self.client.abort_multipart_upload(
                Bucket=self.bucket, Key=upload["Key"], UploadId=upload["UploadId"]
            )
        except ClientError as error:
            if error_code(error) != "NoSuchUpload":  # finished or aborted meanwhile
                raise

    def remove(self, name: str, run: str) -> None:
        """A tag's manifest first (never half-deleted yet published); files it cannot name await run_gone."""
        if STAGING_PATTERN.match(name):
            self.delete_under(self.data_prefix(name))
            return
        manifest = self.manifest(name)
        self.client.delete_object(Bucket=self.bucket, Key=self.key(f"{name}/{MANIFEST}"))
        self.manifests.pop(name, None)
        if manifest is not None and OBJECTS_PATTERN.fullmatch(str(manifest.get("objects", ""))):
            self.delete_under(self.files_of(name, manifest))

    def run_lock(self, run: str) -> s3_lease.Lease:
        return s3_lease.Lease(self.client, self.bucket, self.key(f".run-{run}.lease"))

    def remove_abandoned(self, own_run: str) -> list[str]:
        """Only unpublished files older than the listing's Date go (a starting run's lease may miss it)."""
        objects, now = self.objects()
        leases = {}
        for item in objects:
            match = s3_lease.LEASE_PATTERN.match(item["Key"])
            if match:
                leases[match["run"]] = item["LastModified"].timestamp()
        clock = now if now is not None else max(leases.values(), default=0.0)
        live = {run for run, renewed in leases.items() if clock - renewed < s3_lease.LEASE_SECONDS}
        published = {}
        for _, tag in self.published():
            manifest = self.manifest(tag)
            if manifest is not None:
                published[tag] = str(manifest.get("objects", "")).rstrip("/")

        def left_behind(relative_key: str, created: Any) -> bool:
            """The volume's rule on step_N.tmp-<run>, a published manifest's run counted alive for step N."""
            match = DATA_PATTERN.match(relative_key)
            if match is None or created is None or created.timestamp() >= clock:
                return False
            tag = match["tag"]
            return abandoned(
                f"{tag}.tmp-{match['run']}", own_run, lambda run: run in live or published.get(tag) == run
            )

        doomed = [item["Key"] for item in objects if left_behind(item["Key"], item.get("LastModified"))]
        doomed += [f".run-{run}.lease" for run in leases if run_gone(run, own_run, live.__contains__)]
        self.delete(doomed)
        for upload in self.uploads():
            if left_behind(self.relative(upload["Key"]), upload.get("Initiated")):
                self.abort(upload)
        return sorted(live - {own_run})
