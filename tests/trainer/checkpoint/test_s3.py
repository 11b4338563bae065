"""Checkpoints in object storage (checkpoint.dir = s3://bucket/prefix) against a real S3-compatible server
(versitygw, tests/support/s3_server.py): the rules only an object store needs (manifest deleted first, leases of live
runs, abandoned uploads), exact resume at 1 and 2 ranks, a writer SIGKILLed or SIGTERMed during a multipart
upload, a corrupt or missing object, bad URLs and credentials. Every test here needs the server: it fails,
with one line, when the server cannot be built or started."""

from __future__ import annotations

import hashlib
import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import torch
from botocore.exceptions import ClientError

from tests.e2e.object_storage import complete_checkpoints
from tests.support.s3_server import S3Server
from trainer.checkpoint.layout import tag_for
from trainer.checkpoint.s3 import S3Storage

from ..conftest import (
    REPO,
    TINY_CONFIG,
    assert_clean_failure,
    final_weights,
    metrics,
    preempt_when,
    run_overrides,
    torchrun_command,
    trainer_command,
    trainer_env,
    wait_until,
)

pytestmark = pytest.mark.slow


@pytest.fixture
def s3_env(s3_server: S3Server, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """The server's AWS variables, set in this process too (S3Storage reads them)."""
    for name, value in s3_server.environment().items():
        monkeypatch.setenv(name, value)
    return s3_server.environment()


@pytest.fixture
def storage(s3_url: str, s3_env: dict[str, str]) -> S3Storage:
    return S3Storage(s3_url)


def keys(storage: S3Storage) -> list[str]:
    """Every object under the prefix, relative to it, sorted."""
    return sorted(item["Key"] for item in storage.objects()[0])


def uploads(storage: S3Storage) -> list[str]:
    """The keys of incomplete multipart uploads under the prefix, relative to it."""
    return sorted(storage.relative(upload["Key"]) for upload in storage.uploads())


def put(storage: S3Storage, name: str, content: bytes = b"x") -> None:
    storage.client.put_object(Bucket=storage.bucket, Key=storage.key(name), Body=content)


def start_upload(storage: S3Storage, name: str) -> None:
    """An incomplete multipart upload, as a writer killed mid-upload leaves one."""
    storage.client.create_multipart_upload(Bucket=storage.bucket, Key=storage.key(name))


def publish(storage: S3Storage, step: int, run: str, content: bytes = b"weights") -> None:
    put(storage, f"{tag_for(step)}/{run}/shard_00000.pt", content)
    files = {"shard_00000.pt": {"bytes": len(content), "sha256": hashlib.sha256(content).hexdigest()}}
    manifest = {"format": 2, "step": step, "shards": ["shard_00000.pt"], "files": files}
    assert storage.publish(f"{tag_for(step)}.tmp-{run}", tag_for(step), manifest)


# ---- the rules of the object store ----


def test_removal_deletes_the_manifest_before_the_files(
    storage: S3Storage, monkeypatch: pytest.MonkeyPatch
) -> None:
    for step in (10, 20):
        publish(storage, step, "aa")
    put(storage, "step_000010/bb/shard_00000.pt")  # another run's files of the same step
    seen: list[list[tuple[int, str]]] = []
    real_delete_under = S3Storage.delete_under

    def observe(self: S3Storage, prefix: str) -> None:
        seen.append(self.published())
        real_delete_under(self, prefix)

    monkeypatch.setattr(S3Storage, "delete_under", observe)
    storage.remove("step_000010", "cc")
    assert seen == [[(20, "step_000020")]]  # step 10 was no longer published when its files went
    # the files of the run its manifest named are gone; another run's are left for the abandoned-run rule
    assert keys(storage) == ["step_000010/bb/shard_00000.pt", "step_000020/aa/shard_00000.pt",
                             "step_000020/manifest.json"]  # fmt: skip
    storage.remove("step_000010", "cc")  # already gone: nothing to do


def test_only_what_dead_runs_left_unpublished_is_removed(
    storage: S3Storage, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A run is alive while its lease is younger than LEASE_SECONDS; files a manifest names always stay. The
    sleeps leave LEASE_SECONDS and two seconds more: S3 times are whole seconds, and the listing's clock (the
    store's Date header) may lag by a second (versitygw serves with fasthttp, which refreshes its Date header
    once a second)."""
    monkeypatch.setattr("trainer.checkpoint.s3_lease.LEASE_SECONDS", 2.0)
    put(storage, ".run-a1.lease")  # a1 crashed: its lease is going stale
    put(storage, "step_000010/a1/shard_00000.pt")
    start_upload(storage, "step_000010/a1/shard_00001.pt")
    publish(storage, 50, "d4")  # d4 is gone (no lease), its checkpoint published: kept
    put(storage, "step_000050/e5/shard_00000.pt")  # e5 lost the race for step 50 and died
    time.sleep(4)
    put(storage, ".run-b2.lease")  # b2 is alive and writing step 20
    put(storage, "step_000020/b2/shard_00000.pt")
    start_upload(storage, "step_000020/b2/shard_00001.pt")
    put(storage, "step_000030/c3/shard_00000.pt")  # this run's own write

    assert storage.remove_abandoned(own_run="c3") == ["b2"]
    assert keys(storage) == [".run-b2.lease", "step_000020/b2/shard_00000.pt", "step_000030/c3/shard_00000.pt",
                             "step_000050/d4/shard_00000.pt", "step_000050/manifest.json"]  # fmt: skip
    assert uploads(storage) == ["step_000020/b2/shard_00001.pt"]
    assert storage.published() == [(50, "step_000050")]

    time.sleep(4)  # b2 has died since
    assert storage.remove_abandoned(own_run="c3") == []
    assert keys(storage) == ["step_000030/c3/shard_00000.pt", "step_000050/d4/shard_00000.pt",
                             "step_000050/manifest.json"]  # fmt: skip
    assert uploads(storage) == []


def test_a_run_starting_during_the_listing_is_not_taken_for_dead(
    storage: S3Storage, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A run that writes its lease just after another run listed the leases, then files and an upload that
    the later listings see: none of it is removed (it is newer than the listing's clock)."""
    put(storage, "step_000010/a1/shard_00000.pt")  # a dead run's leftover, from before the listing
    time.sleep(2.1)  # S3 times have whole seconds, and the listing's Date header may lag by one (fasthttp)
    before, clock = storage.objects()  # the page of the leases, listed before f7 started
    time.sleep(1.1)
    put(storage, ".run-f7.lease")
    put(storage, "step_000020/f7/shard_00000.pt")
    start_upload(storage, "step_000020/f7/shard_00001.pt")
    after, _ = storage.objects()
    leases_missed = [item for item in after if not item["Key"].startswith(".run-")]
    monkeypatch.setattr(storage, "objects", lambda: (leases_missed, clock))
    assert storage.remove_abandoned(own_run="c3") == []
    monkeypatch.undo()
    assert keys(storage) == [".run-f7.lease", "step_000020/f7/shard_00000.pt"]
    assert uploads(storage) == ["step_000020/f7/shard_00001.pt"]
    assert [item["Key"] for item in before] == ["step_000010/a1/shard_00000.pt"]


def test_concurrent_publishers_of_one_step_publish_exactly_once(storage: S3Storage) -> None:
    """Eight runs publish the same step at the same moment against the real server: the conditional write
    lets exactly one manifest in, and it names that run's complete files."""
    runs = [f"{index:02x}" for index in range(8)]
    manifests = {}
    for run in runs:
        content = f"weights of {run}".encode()
        put(storage, f"step_000010/{run}/shard_00000.pt", content)
        files = {"shard_00000.pt": {"bytes": len(content), "sha256": hashlib.sha256(content).hexdigest()}}
        manifests[run] = {"format": 2, "step": 10, "shards": ["shard_00000.pt"], "files": files}
    start = threading.Barrier(len(runs))

    def publish_as(run: str) -> bool:
        start.wait()
        return S3Storage(storage.url).publish(f"step_000010.tmp-{run}", "step_000010", manifests[run])

    with ThreadPoolExecutor(len(runs)) as pool:
        outcomes = dict(zip(runs, pool.map(publish_as, runs), strict=True))
    winners = [run for run, won in outcomes.items() if won]
    assert len(winners) == 1, outcomes
    verified, problem = storage.verify("step_000010")
    assert problem is None and verified is not None
    assert verified["objects"] == f"{winners[0]}/" and verified["files"] == manifests[winners[0]]["files"]


def test_a_damaged_manifest_cannot_name_a_local_path(storage: S3Storage, tmp_path: Path) -> None:
    """The downloads are named by their sha256 (and a hash of the object's key): one that is not 64 hex digits
    fails the checksum instead."""
    target = tmp_path / "escaped"
    put(storage, "step_000010/aa/shard_00000.pt", b"weights")
    files = {"shard_00000.pt": {"bytes": 7, "sha256": f"../../../../../../..{target}"}}
    assert storage.publish("step_000010.tmp-aa", "step_000010", {"format": 2, "step": 10, "files": files})
    assert storage.verify("step_000010") == (None, "shard_00000.pt does not match its checksum")
    assert not target.exists()


def test_a_lease_is_renewed_while_held_and_deleted_on_release(
    storage: S3Storage, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("trainer.checkpoint.s3_lease.RENEW_SECONDS", 0.2)
    lease = storage.run_lock("f6")
    assert lease.acquire() == "held"
    head = storage.client.head_object(Bucket=storage.bucket, Key=storage.key(".run-f6.lease"))
    time.sleep(2.5)  # S3 times have whole seconds
    renewed = storage.client.head_object(Bucket=storage.bucket, Key=storage.key(".run-f6.lease"))
    assert renewed["LastModified"] > head["LastModified"]
    lease.release(remove=True)
    assert keys(storage) == []


def test_a_store_without_conditional_writes_still_never_replaces_a_checkpoint(
    storage: S3Storage, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A store that answers 501 NotImplemented to If-None-Match (the header alone is refused here, on top of
    the real server): look, then write."""
    real_put = storage.client.put_object

    def no_conditions(**kwargs: Any) -> Any:
        if "IfNoneMatch" in kwargs:
            error = {"Error": {"Code": "NotImplemented", "Message": "If-None-Match"}}
            raise ClientError(error, "PutObject")
        return real_put(**kwargs)

    monkeypatch.setattr(storage.client, "put_object", no_conditions)
    publish(storage, 10, "aa", b"first")
    put(storage, "step_000010/bb/shard_00000.pt", b"second")
    manifest = {"format": 2, "step": 10, "files": {"shard_00000.pt": {"bytes": 6, "sha256": "0" * 64}}}
    assert not storage.publish("step_000010.tmp-bb", "step_000010", manifest)
    verified, problem = storage.verify("step_000010")
    assert problem is None and verified is not None and verified["objects"] == "aa/"


# ---- end to end: the trainer on the S3 server ----

# `python -m trainer ...` whose uploads of the named checkpoint crawl (seconds per MiB sent), one part of 5 MiB
# (S3's smallest) after the other, and whose view of leases lasts `lease` seconds. argv:
# "step_000020=2,lease=60", then the trainer's arguments.
SLOW_UPLOADS = """
import sys, time
from boto3.s3.transfer import TransferConfig
import trainer.checkpoint.s3 as s3
import trainer.checkpoint.s3_lease as s3_lease
from trainer.cli import main

settings = dict(item.split("=") for item in sys.argv[1].split(",") if item)
s3_lease.LEASE_SECONDS = float(settings.pop("lease", s3_lease.LEASE_SECONDS))
part = 5 * 1024 * 1024
s3.TRANSFER = TransferConfig(multipart_threshold=part, multipart_chunksize=part, max_concurrency=1)
real_upload_file = s3.S3Storage.write_shard

def write_shard(self, staging, name, state):
    delay = float(settings.get(staging.split(".")[0], 0))
    upload_file = self.client.upload_file
    def slow(*args, **kwargs):
        kwargs["Callback"] = lambda sent: time.sleep(delay * sent / 2**20)
        return upload_file(*args, **kwargs)
    self.client.upload_file = slow
    try:
        return real_upload_file(self, staging, name, state)
    finally:
        self.client.upload_file = upload_file

s3.S3Storage.write_shard = write_shard
sys.exit(main(sys.argv[2:]))
"""
# A model whose shard (about 11.5 MB with its AdamW state) is uploaded in 3 parts: 5 MiB, 5 MiB, the rest.
BIG_SHARD = {"model__n_embd": 192}
SETTINGS = {"train__max_steps": 40, "checkpoint__every_steps": 10, "checkpoint__keep_last": 3,
            "output__log_every": 1}  # fmt: skip


def s3_overrides(run_dir: Path, url: str, **settings: Any) -> list[str]:
    return [*run_overrides(run_dir, **{**SETTINGS, **settings}), "--set", f"checkpoint.dir={url}"]


def slow_upload_command(run_dir: Path, url: str, slow: str, **settings: Any) -> list[str]:
    args = s3_overrides(run_dir, url, **settings)
    return [sys.executable, "-c", SLOW_UPLOADS, slow, "train", "--config", str(TINY_CONFIG), *args]


def run_s3(args: list[str], env: dict[str, str], timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        args, cwd=REPO, env=trainer_env(**env), capture_output=True, text=True, timeout=timeout
    )


def start(args: list[str], env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen(args, cwd=REPO, env=trainer_env(**env), text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip


def uploading(storage: S3Storage, step: int) -> bool:
    """Whether a multipart upload of checkpoint `step` is in progress with a part on the server."""
    for upload in storage.uploads(f"{tag_for(step)}/"):
        parts = storage.client.list_parts(
            Bucket=storage.bucket, Key=upload["Key"], UploadId=upload["UploadId"]
        )
        if parts.get("Parts"):
            return True
    return False


def s3_weights(storage: S3Storage) -> dict[str, torch.Tensor]:
    """The newest published checkpoint's fp32 weights by parameter name, from all its shards."""
    tag = storage.published()[0][1]
    manifest, problem = storage.verify(tag)
    assert manifest is not None, problem
    weights = {}
    for shard in manifest["shards"]:
        weights.update(
            {name: entry["weight"] for name, entry in storage.read_shard(tag, shard)["params"].items()}
        )
    return weights


def starts(run_dir: Path) -> list[Any]:
    return [m["resumed_from"] for m in metrics(run_dir) if m["event"] == "start"]


def test_resume_from_s3_is_bit_exact(tmp_path: Path, storage: S3Storage, s3_env: dict[str, str]) -> None:
    # The same run on local disk, 20 steps then resumed to 40 (the resume keeps the 20-step LR schedule:
    # docs/trainer.md), is the reference the bucket's resume must match bit for bit.
    reference = tmp_path / "reference"
    for steps in (20, 40):
        done = run_s3(trainer_command("train", TINY_CONFIG, run_overrides(reference, **{**SETTINGS,
                                                                          "train__max_steps": steps})), {})  # fmt: skip
        assert done.returncode == 0, done.stderr[-3000:]
    resumed = tmp_path / "resumed"
    first = run_s3(trainer_command("train", TINY_CONFIG, s3_overrides(resumed, storage.url, train__max_steps=20)),
                   s3_env)  # fmt: skip
    assert first.returncode == 0, first.stderr[-3000:]
    assert [tag for _, tag in storage.published()] == ["step_000020", "step_000010"]
    second = run_s3(trainer_command("train", TINY_CONFIG, s3_overrides(resumed, storage.url)), s3_env)
    assert second.returncode == 0, second.stderr[-3000:]
    assert starts(resumed) == [None, "step_000020"]
    checkpoint = [m for m in metrics(resumed) if m["event"] == "checkpoint"][-1]
    assert checkpoint["path"] == f"{storage.url}/step_000040" and checkpoint["write_s"] > 0
    losses = {m["step"]: m["loss"] for m in metrics(resumed) if m["event"] == "train" and m["step"] > 20}
    expected = {m["step"]: m["loss"] for m in metrics(reference) if m["event"] == "train" and m["step"] > 20}
    assert losses == expected
    reference_weights = final_weights(reference)
    for name, tensor in s3_weights(storage).items():
        assert torch.equal(tensor, reference_weights[name]), name
    # keep_last 3; no lease, upload or unpublished file left behind
    assert [tag for _, tag in storage.published()] == ["step_000040", "step_000030", "step_000020"]
    assert uploads(storage) == [] and not any(".lease" in key for key in keys(storage))
    assert len(keys(storage)) == 6  # three manifests, three shards
    # The real run's own check of a bucket (tests/e2e/object_storage.py) reads this layout the same way.
    assert sorted(complete_checkpoints(storage.client, storage.bucket, storage.key(""))) == [20, 30, 40]


def test_two_ranks_write_and_resume_on_s3(tmp_path: Path, storage: S3Storage, s3_env: dict[str, str]) -> None:
    settings = {"train__max_steps": 30, "train__zero_stage": 1}
    reference = tmp_path / "reference"  # on local disk, 20 steps then resumed to 30, as the bucket's run
    for steps in (20, 30):
        overrides = run_overrides(reference, **{**SETTINGS, **settings, "train__max_steps": steps})
        done = run_s3(torchrun_command(2, TINY_CONFIG, overrides), {})
        assert done.returncode == 0, done.stderr[-3000:]
    resumed = tmp_path / "resumed"
    first = run_s3(torchrun_command(2, TINY_CONFIG, s3_overrides(resumed, storage.url, **{**settings,
                                                                 "train__max_steps": 20})), s3_env)  # fmt: skip
    assert first.returncode == 0, first.stderr[-3000:]
    manifest, problem = storage.verify("step_000020")
    assert manifest is not None, problem
    assert (manifest["world_size"], manifest["shards"]) == (2, ["shard_00000.pt", "shard_00001.pt"])
    run_prefix = f"step_000020/{manifest['objects']}"
    assert [k for k in keys(storage) if k.startswith("step_000020/")] == [
        f"{run_prefix}shard_00000.pt", f"{run_prefix}shard_00001.pt", "step_000020/manifest.json"]  # fmt: skip
    second = run_s3(torchrun_command(2, TINY_CONFIG, s3_overrides(resumed, storage.url, **settings)), s3_env)
    assert second.returncode == 0, second.stderr[-3000:]
    assert starts(resumed) == [None, "step_000020"]
    reference_weights = final_weights(reference)
    for name, tensor in s3_weights(storage).items():
        torch.testing.assert_close(tensor, reference_weights[name], atol=1e-4, rtol=0)


def test_a_writer_killed_mid_upload_leaves_the_previous_checkpoint_newest(
    tmp_path: Path, storage: S3Storage, s3_env: dict[str, str]
) -> None:
    # Its spooled shard (TMPDIR) outlives a SIGKILL: in the test's directory, not the machine's /tmp.
    killed = start(slow_upload_command(tmp_path, storage.url, "step_000020=2", train__max_steps=1000,
                                       **BIG_SHARD), {**s3_env, "TMPDIR": str(tmp_path)})  # fmt: skip
    wait_until(lambda: uploading(storage, 20), killed)
    killed.kill()  # SIGKILL: a part of checkpoint 20's shard is on the server (of 3, about 10 s apart)
    killed.communicate()
    assert storage.published() == [(10, "step_000010")]
    assert [key.split("/")[0] for key in uploads(storage)] == ["step_000020"]

    # Within LEASE_SECONDS of the crash the dead run still counts as alive: its files are ignored, not read
    ignored = run_s3(slow_upload_command(tmp_path, storage.url, "", train__max_steps=10, **BIG_SHARD), s3_env)
    assert ignored.returncode == 0, ignored.stderr[-3000:]
    assert starts(tmp_path)[-1] == "step_000010"
    assert "is also being written by another live run" in ignored.stderr
    assert [key.split("/")[0] for key in uploads(storage)] == ["step_000020"]

    # Once its lease is stale (LEASE_SECONDS 1 here) its upload is aborted and its files deleted
    resumed = run_s3(slow_upload_command(tmp_path, storage.url, "lease=1", train__max_steps=30, **BIG_SHARD),
                     s3_env)  # fmt: skip
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert starts(tmp_path)[-1] == "step_000010"
    assert uploads(storage) == []
    assert [tag for _, tag in storage.published()] == ["step_000030", "step_000020", "step_000010"]
    for _, tag in storage.published():
        assert storage.verify(tag)[1] is None, tag
    named = {f"{tag}/{(storage.manifest(tag) or {})['objects']}" for _, tag in storage.published()}
    assert all(key.endswith("manifest.json") or key.rsplit("/", 1)[0] + "/" in named for key in keys(storage))


def test_sigterm_during_an_upload_ends_with_complete_checkpoints(
    tmp_path: Path, storage: S3Storage, s3_env: dict[str, str]
) -> None:
    process = start(slow_upload_command(tmp_path, storage.url, "step_000020=1", train__max_steps=1000,
                                        checkpoint__keep_last=10, **BIG_SHARD), s3_env)  # fmt: skip
    stopped_at = preempt_when(lambda: uploading(storage, 20), process, tmp_path)
    assert stopped_at > 20
    # Every save was published, the one in flight at the signal (20) and the stop's own among them (the
    # loop may have reached step 30 meanwhile: that save waited for 20's upload), and each is complete.
    events = {m["step"]: m for m in metrics(tmp_path) if m["event"] == "checkpoint"}
    assert {10, 20, stopped_at} <= set(events) <= {10, 20, 30, stopped_at}
    assert [tag for _, tag in storage.published()] == [tag_for(step) for step in sorted(events, reverse=True)]
    for _, tag in storage.published():
        assert storage.verify(tag)[1] is None, tag
    assert events[20]["write_s"] >= 5  # about 11 MiB at 1 s per MiB: the stop waited for it
    assert uploads(storage) == [] and not any(".lease" in key for key in keys(storage))


@pytest.mark.parametrize("damage", ["corrupt", "missing"])
def test_a_corrupt_or_missing_object_falls_back_to_the_previous_checkpoint(
    tmp_path: Path, storage: S3Storage, s3_env: dict[str, str], damage: str
) -> None:
    args = trainer_command("train", TINY_CONFIG, s3_overrides(tmp_path, storage.url, train__max_steps=30))
    first = run_s3(args, s3_env)
    assert first.returncode == 0, first.stderr[-3000:]
    manifest = storage.manifest("step_000030")
    assert manifest is not None
    key = storage.key(f"step_000030/{manifest['objects']}shard_00000.pt")
    if damage == "corrupt":  # one byte flipped, the size unchanged
        data = bytearray(storage.client.get_object(Bucket=storage.bucket, Key=key)["Body"].read())
        data[len(data) // 2] ^= 0xFF
        storage.client.put_object(Bucket=storage.bucket, Key=key, Body=bytes(data))
    else:
        storage.client.delete_object(Bucket=storage.bucket, Key=key)
    second = run_s3(args, s3_env)
    assert second.returncode == 0, second.stderr[-3000:]
    problem = "does not match its checksum" if damage == "corrupt" else "is missing"
    assert f"skipping checkpoint {storage.url}/step_000030: shard_00000.pt {problem}" in second.stderr
    assert starts(tmp_path) == [None, "step_000020"]
    assert f"replacing {storage.url}/step_000030" in second.stderr  # when the run got there again
    assert storage.verify("step_000030")[1] is None


@pytest.fixture
def unused_port() -> Iterator[int]:
    from trainer.distributed import free_port

    yield free_port()


@pytest.mark.parametrize(
    ("case", "fragment"),
    [
        ("wrong secret", "the store refused the credentials or the request (SignatureDoesNotMatch"),
        ("no credentials", "no credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"),
        ("no bucket", "the bucket does not exist"),
        ("unreachable", "cannot reach the store"),
        ("bad endpoint", "cannot use the S3 client: Invalid endpoint: not-a-url"),
        ("bad url", "checkpoint.dir: must be a directory, or s3://bucket/prefix"),
    ],
)
def test_bad_urls_and_credentials_stop_the_launch_with_one_line(
    tmp_path: Path, s3_url: str, s3_server: S3Server, unused_port: int, case: str, fragment: str
) -> None:
    env = s3_server.environment()
    url = s3_url
    if case == "wrong secret":
        env["AWS_SECRET_ACCESS_KEY"] = "not-the-secret"
    elif case == "no credentials":
        env = {k: v for k, v in env.items() if k not in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")}
        env["AWS_EC2_METADATA_DISABLED"] = "true"  # no instance metadata service to ask on this machine
    elif case == "no bucket":
        url = "s3://no-such-bucket-here/ckpt"
    elif case == "unreachable":
        env["AWS_ENDPOINT_URL_S3"] = f"http://127.0.0.1:{unused_port}"
    elif case == "bad endpoint":
        env["AWS_ENDPOINT_URL_S3"] = "not-a-url"
    else:
        url = "s3://Not_A_Bucket/ckpt"
    args = trainer_command("launch", TINY_CONFIG, s3_overrides(tmp_path, url))
    environment = {k: v for k, v in trainer_env(**env).items() if k in env or not k.startswith("AWS_")}
    result = subprocess.run(args, cwd=REPO, env=environment, capture_output=True, text=True, timeout=240)
    assert_clean_failure(result, "checkpoint.dir", fragment)
    assert not (tmp_path / "output").exists()  # before training: nothing written


def test_bad_credentials_stop_train_on_every_rank(tmp_path: Path, s3_url: str, s3_server: S3Server) -> None:
    """`train` under torchrun (no launcher to check first): both ranks exit 2 before the first step."""
    env = s3_server.environment(AWS_SECRET_ACCESS_KEY="not-the-secret")
    result = run_s3(torchrun_command(2, TINY_CONFIG, s3_overrides(tmp_path, s3_url)), env)
    assert result.returncode != 0
    assert result.stderr.count("error: checkpoint.dir: ") == 2, result.stderr[-3000:]
    assert "SignatureDoesNotMatch" in result.stderr
    # torchrun's own report gives the ranks' exit codes (its traceback is torchrun's: no worker's): 2, or
    # SIGTERM (-15) for a rank torchrun stopped once the first had failed, after it printed its line
    codes = [int(code) for code in re.findall(r"exitcode\s*:\s*(-?\d+)", result.stderr)]
    assert 2 in codes and set(codes) <= {2, -15}, result.stderr[-3000:]
    assert f'File "{REPO / "trainer"}' not in result.stderr
    assert not (tmp_path / "output" / "metrics.jsonl").exists()  # before the first step
