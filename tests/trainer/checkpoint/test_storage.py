"""trainer.checkpoint.storage and the rules every Storage keeps (on a directory and on a real S3 server):
a checkpoint is trusted only while its files match its manifest, published once, never over a complete
one; the newest verified one is chosen; the look at checkpoint.dir before a run."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest

from trainer.checkpoint.layout import (
    tag_for,
)
from trainer.checkpoint.local import LocalStorage
from trainer.checkpoint.storage import newest_verified, open_storage, resume_problem
from trainer.config import ConfigError
from trainer.metrics import warn

from .conftest import (
    Backend,
    LocalBackend,
    S3Backend,
    block_buffered,
    publish_step,
    staged,
)


def test_manifest_lists_every_file(backend: Backend) -> None:
    publish_step(backend, 7, "aa")
    manifest, problem = backend.storage.verify(tag_for(7))
    assert problem is None and manifest is not None
    assert (manifest["step"], manifest["world_size"], manifest["model"]) == (7, 2, {"n_layer": 2})
    assert set(manifest["files"]) == {"model.pt", "sub/rng.pt"}
    assert manifest["files"]["model.pt"] == {"bytes": 7, "sha256": hashlib.sha256(b"weights").hexdigest()}
    assert backend.storage.published() == [(7, "step_000007")]
    # the staging directory became the checkpoint; on S3 the files stay under the run's prefix
    expected = {
        LocalBackend: ["step_000007/manifest.json", "step_000007/model.pt", "step_000007/sub/rng.pt"],
        S3Backend: ["step_000007/aa/model.pt", "step_000007/aa/sub/rng.pt", "step_000007/manifest.json"],
    }
    assert backend.names() == expected[type(backend)]


def test_missing_truncated_or_altered_files_are_detected(backend: Backend) -> None:
    publish_step(backend, 7, "aa")
    verify = backend.storage.verify
    backend.replace(tag_for(7), "model.pt", b"weighs!")
    assert verify(tag_for(7)) == (None, "model.pt does not match its checksum")
    backend.replace(tag_for(7), "model.pt", b"w")
    assert verify(tag_for(7)) == (None, "model.pt has 1 bytes, the manifest says 7")
    backend.replace(tag_for(7), "model.pt", b"weights")
    assert verify(tag_for(7))[1] is None
    backend.replace(tag_for(7), "sub/rng.pt", None)
    assert verify(tag_for(7)) == (None, "sub/rng.pt is missing")
    backend.replace(tag_for(7), "manifest.json", b"{not json")
    assert verify(tag_for(7)) == (None, "no readable manifest.json (JSONDecodeError)")


def test_a_warning_is_out_before_the_next_line_of_work(monkeypatch: pytest.MonkeyPatch) -> None:
    """Warnings go to stderr flushed: a crash right after one (or a block-buffered stderr) does not lose it."""
    stderr = block_buffered(monkeypatch)
    warn("skipping checkpoint /ckpt/step_000010: shard_00000.pt is missing")
    assert stderr.getvalue() == b"warning: skipping checkpoint /ckpt/step_000010: shard_00000.pt is missing\n"


def test_a_published_checkpoint_is_never_replaced_by_a_second_publisher(backend: Backend) -> None:
    """Two runs publishing the same step (e.g. a zombie pod still writing): the first stays, whole."""
    storage = backend.storage
    first = staged(backend, "step_000010.tmp-aa", b"first run")
    second = staged(backend, "step_000010.tmp-bb", b"second run, longer")
    assert storage.publish("step_000010.tmp-aa", "step_000010", {"format": 2, "step": 10, "files": first})
    assert not storage.publish(
        "step_000010.tmp-bb", "step_000010", {"format": 2, "step": 10, "files": second}
    )
    manifest, problem = storage.verify("step_000010")
    assert problem is None and manifest is not None and manifest["files"] == first
    assert storage.published() == [(10, "step_000010")]
    assert storage.staged_problem("step_000010.tmp-bb", second) is None  # the loser's files, unpublished
    storage.remove("step_000010.tmp-bb", "bb")
    assert storage.staged_problem("step_000010.tmp-bb", second) == "model.pt is missing"
    assert storage.verify("step_000010")[1] is None


# ---- which checkpoint: the rules as pure functions ----


def test_the_newest_checkpoint_whose_files_match_is_chosen(
    backend: Backend, capsys: pytest.CaptureFixture[str]
) -> None:
    storage = backend.storage
    assert newest_verified(storage) is None
    for step in (10, 20, 30):
        staging = f"{tag_for(step)}.tmp-aa"
        files = staged(backend, staging, b"w")
        assert storage.publish(staging, tag_for(step), {"format": 2, "step": step, "files": files})
    backend.replace("step_000030", "model.pt", b"x")  # overwritten
    backend.replace("step_000020", "model.pt", b"v")  # altered
    assert capsys.readouterr().err == ""
    found = newest_verified(storage)
    assert found is not None and found[0] == "step_000010" and found[1]["step"] == 10
    assert capsys.readouterr().err == (
        f"warning: skipping checkpoint {storage.describe('step_000030')}: model.pt does not match its checksum\n"
        f"warning: skipping checkpoint {storage.describe('step_000020')}: model.pt does not match its checksum\n"
    )
    backend.replace("step_000010", "manifest.json", None)
    assert newest_verified(storage) is None


def test_checkpoint_dir_chooses_its_storage(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """s3://bucket/prefix is an object store, checked only when asked (no request before that); anything else
    is a directory, never checked (it is created on the first write)."""
    from trainer.checkpoint.s3 import S3Storage

    for name in ("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_REGION", "us-east-1")
    checked: list[str] = []
    monkeypatch.setattr(S3Storage, "check", lambda self: checked.append(self.url))
    local = open_storage(str(tmp_path / "ckpt"), check=True)
    assert isinstance(local, LocalStorage) and local.root == tmp_path / "ckpt" and checked == []
    s3 = open_storage("s3://bucket/runs/ckpt")
    assert isinstance(s3, S3Storage) and (s3.bucket, s3.prefix) == ("bucket", "runs/ckpt") and checked == []
    open_storage("s3://bucket/runs/ckpt", check=True)
    assert checked == ["s3://bucket/runs/ckpt"]


def test_an_object_store_that_cannot_be_used_is_the_resume_problem(monkeypatch: pytest.MonkeyPatch) -> None:
    """The look before a run: a store that does not answer or refuses the credentials is its one line; one
    that works and holds no checkpoint is no problem."""
    from trainer.checkpoint.s3 import S3Storage

    monkeypatch.setenv("AWS_REGION", "us-east-1")
    refused = "checkpoint.dir: s3://bucket/runs/ckpt (endpoint http://store): access denied"

    def check(self: S3Storage) -> None:
        raise ConfigError(refused)

    monkeypatch.setattr(S3Storage, "check", check)
    assert resume_problem("s3://bucket/runs/ckpt") == refused
    monkeypatch.setattr(S3Storage, "check", lambda self: None)
    monkeypatch.setattr(S3Storage, "published", lambda self: [])
    assert resume_problem("s3://bucket/runs/ckpt") is None


EARLIER_LAYOUT = {"step": 5, "world_size": 1, "files": {}}  # DeepSpeed's per-rank files: no "format"
UNSUPPORTED = (
    "is in DeepSpeed's per-rank layout of an earlier trainer, which this trainer no longer reads; finish that "
    "run with the trainer that wrote it, or use a new checkpoint.dir"
)


@pytest.mark.parametrize(
    ("manifests", "refused"),
    [
        ({}, None),  # no checkpoint
        ({5: {**EARLIER_LAYOUT, "format": 2}}, None),
        ({5: EARLIER_LAYOUT}, "step_000005"),
        ({5: EARLIER_LAYOUT, 10: "{half written"}, "step_000005"),  # the newest that reads decides
        ({5: EARLIER_LAYOUT, 10: {**EARLIER_LAYOUT, "format": 2}}, None),  # only the newest counts
    ],
)
def test_a_checkpoint_of_the_earlier_layout_is_refused_in_one_line(
    tmp_path: Path, manifests: dict[int, Any], refused: str | None
) -> None:
    for step, manifest in manifests.items():
        (tmp_path / tag_for(step)).mkdir()
        text = manifest if isinstance(manifest, str) else json.dumps(manifest)
        (tmp_path / tag_for(step) / "manifest.json").write_text(text)
    expected = None if refused is None else f"checkpoint.dir: {tmp_path / refused} {UNSUPPORTED}"
    assert resume_problem(str(tmp_path)) == expected
    assert resume_problem(str(tmp_path / "not yet")) is None


def test_a_checkpoint_of_the_earlier_layout_is_never_resumed(backend: Backend) -> None:
    """Behind a newer one that fails its checksums it is skipped as unusable, on every Storage."""
    files = staged(backend, "step_000005.tmp-aa", b"w")
    assert backend.storage.publish("step_000005.tmp-aa", "step_000005", {"step": 5, "files": files})
    assert backend.storage.verify("step_000005") == (None, f"it {UNSUPPORTED}")
    assert newest_verified(backend.storage) is None
