"""Every local directory a run writes to, checked before anything is written: one line naming the key. The probe
makes and removes a directory in the nearest existing ancestor: access(2) alone would pass root on a read-only
mount, or in /proc."""

from __future__ import annotations

import errno
import os
import tempfile
from pathlib import Path

from trainer.config import ConfigError, TrainConfig, is_s3_url

PROBE_PREFIX = ".trainstack-write-probe-"


def directory_problem(key: str, directory: str) -> str | None:
    """Why the run cannot write under `directory` (the value of config key `key`), or None."""
    path = Path(directory).expanduser().absolute()
    existing = path
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        where = "it is a file" if existing == path else f"{existing} is a file"
        return f"{key}: {directory} cannot be a directory: {where}; name a directory"
    try:
        os.rmdir(tempfile.mkdtemp(prefix=PROBE_PREFIX, dir=existing))
    except OSError as error:
        reason = error.strerror or str(error)
        if error.errno in (errno.ENOENT, errno.EPERM):  # /proc, /sys: a directory that takes no new entries
            reason = f"nothing can be created there ({reason})"
        return (
            f"{key}: {directory} is not writable: {existing}: {reason}; name a directory this user can write"
        )
    return None


def written_directories(config: TrainConfig) -> dict[str, str]:
    directories = {"output.dir": config.output.dir, "data.cache_dir": config.data.cache_dir}
    if not is_s3_url(config.checkpoint.dir):
        directories["checkpoint.dir"] = config.checkpoint.dir
    uri = config.output.tracking_uri
    if config.output.tracking == "mlflow" and uri and uri.startswith("sqlite:///"):
        directories["output.tracking_uri"] = str(Path(uri.removeprefix("sqlite:///")).parent)
    return directories


def check_writable(config: TrainConfig) -> None:
    """ConfigError naming the first directory the run could not write to."""
    for key, directory in written_directories(config).items():
        if problem := directory_problem(key, directory):
            raise ConfigError(problem)
