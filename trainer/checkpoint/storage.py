"""The Storage a checkpoint.dir is, and the look at it before a run starts (no torch: `launch` uses it)."""

from __future__ import annotations

from typing import Any

from trainer.checkpoint.layout import Storage, unsupported
from trainer.checkpoint.local import LocalStorage
from trainer.config import ConfigError, is_s3_url
from trainer.metrics import warn


def open_storage(directory: str, check: bool = False) -> Storage:
    """check: that an object store may be used now (ConfigError, one line, if not)."""
    if not is_s3_url(directory):
        return LocalStorage(directory)
    from trainer.checkpoint.s3 import S3Storage  # boto3: only for an object store

    storage = S3Storage(directory)
    if check:
        storage.check()
    return storage


def resume_problem(directory: str) -> str | None:
    """Why a run cannot start on checkpoint.dir (one line), or None; for `launch` and `train`, before work:
    the store usable now, the newest readable manifest (no checksums) of a layout this trainer reads."""
    try:
        storage = open_storage(directory, check=True)
    except ConfigError as error:
        return str(error)
    for _, tag in storage.published():
        manifest = storage.manifest(tag)
        if manifest is not None:
            problem = unsupported(manifest)
            return f"checkpoint.dir: {storage.describe(tag)} is {problem}" if problem else None
    return None


def newest_verified(storage: Storage) -> tuple[str, dict[str, Any]] | None:
    """The newest complete checkpoint; a warning names each newer one skipped and why."""
    for _, tag in storage.published():
        manifest, problem = storage.verify(tag)
        if manifest is not None:
            return tag, manifest
        warn(f"skipping checkpoint {storage.describe(tag)}: {problem}")
    return None
