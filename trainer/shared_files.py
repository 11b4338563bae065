"""Writes safe with several writers on one shared volume (NFS, hostPath); fcntl locks, refused or local on
some mounts, only avoid duplicate work or order appends. upstream: nfs(5) "Data and metadata coherence"."""

from __future__ import annotations

import errno
import fcntl
import hashlib
import os
import uuid
from pathlib import Path
from typing import Literal

LOCKING_UNSUPPORTED = {errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS}  # cannot lock, rather than taken
LOCK_BUSY = {errno.EACCES, errno.EAGAIN}  # F_SETLK: another process holds a conflicting lock
LockState = Literal["held", "busy", "unsupported"]


def fsync_directory(path: Path) -> None:
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def sha256_of(path: Path) -> str:
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def _write_temporary(path: Path, data: bytes | memoryview) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")  # random: PIDs are 1 in containers
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    with os.fdopen(descriptor, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    return temporary


def write_once(path: Path, data: bytes | memoryview) -> bool:
    """Same content whoever writes; True if published here. link(2) never replaces a file a reader maps."""
    temporary = _write_temporary(path, data)
    try:
        os.link(temporary, path)
    except FileExistsError:
        return False
    finally:
        os.unlink(temporary)
    fsync_directory(path.parent)
    return True


def write_replacing(path: Path, data: bytes) -> None:
    """With concurrent writers the last rename wins, whole."""
    temporary = _write_temporary(path, data)
    try:
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    fsync_directory(path.parent)


def append_line(path: Path, line: str) -> None:
    """One O_APPEND write under an exclusive lock, which keeps lines whole over NFS (revalidate on lock)."""
    data = (line + "\n").encode("utf-8")
    descriptor = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
    try:
        try:
            fcntl.lockf(descriptor, fcntl.LOCK_EX)
        except OSError as error:
            if error.errno not in LOCKING_UNSUPPORTED:  # a filesystem that cannot lock: append all the same
                raise
        written = os.write(descriptor, data)
        if written != len(data):  # a regular file takes it whole unless the disk is full
            raise OSError(errno.ENOSPC, f"short write appending to {path}")
    finally:
        os.close(descriptor)  # closing releases the lock


class HeldLock:
    """An exclusive lock held from `acquire` to `release`; it goes with the process when it dies."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.descriptor: int | None = None

    def acquire(self) -> LockState:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        descriptor = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.lockf(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as error:
            os.close(descriptor)
            if error.errno in LOCK_BUSY:
                return "busy"
            if error.errno in LOCKING_UNSUPPORTED:
                return "unsupported"
            raise
        self.descriptor = descriptor
        return "held"

    def release(self, remove: bool = False) -> None:
        """remove=True deletes the file first, so nobody locks a name being freed."""
        if self.descriptor is None:
            return
        if remove:
            self.path.unlink(missing_ok=True)
        os.close(self.descriptor)  # closing releases the process's locks on the file
        self.descriptor = None
