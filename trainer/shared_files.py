"""Writes that are safe when several processes, pods or hosts write one shared volume (NFS, a hostPath, a disk):

- `write_once`: content the same whoever writes it (the token cache): a unique temporary name (O_EXCL, a
  random suffix: never the PID, 1 in every container), fsynced, published by link(2), which never replaces a
  file a reader may have mapped.
- `write_replacing`: a small file whose newest version wins (summary.json, run_state.json): the same
  temporary name, then rename(2); readers see the old file or the new, whole.
- `append_line`: one JSON line in one O_APPEND write(2) under an exclusive lock, which is what keeps lines
  whole over NFS (clients revalidate the size on lock and flush before unlock).
Locks are POSIX record locks (fcntl, which NFS carries to the server); a mount without a lock service refuses
or localises them, so they only avoid duplicate work or order appends, never decide correctness.
upstream: nfs(5) "Data and metadata coherence"
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Literal

# errno values with which a filesystem says it cannot lock (rather than that the lock is taken)
LOCKING_UNSUPPORTED = {errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS}
LOCK_BUSY = {errno.EACCES, errno.EAGAIN}  # F_SETLK: another process holds a conflicting lock
LockState = Literal["held", "busy", "unsupported"]


def fsync_directory(path: Path) -> None:
    """Make a rename or link inside `path` durable (POSIX: fsync the directory itself)."""
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def unique_temporary(path: Path) -> Path:
    """A hidden sibling of `path` with a random suffix, for one writer's temporary copy."""
    return path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")


def _write_temporary(path: Path, data: bytes | memoryview) -> Path:
    """`data` in a new unique temporary sibling of `path`, fsynced; its mode follows the umask."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = unique_temporary(path)
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    with os.fdopen(descriptor, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    return temporary


def write_once(path: Path, data: bytes | memoryview) -> bool:
    """Publish `data` at `path` unless a file is there already; True if this call published it. Either way
    `path` then holds one writer's whole data (an NFS link(2) retried after success reads as another's)."""
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
    """Replace `path` with `data` atomically; with concurrent writers the last rename wins, whole."""
    temporary = _write_temporary(path, data)
    try:
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    fsync_directory(path.parent)


def append_line(path: Path, line: str) -> None:
    """Append one line (no newline inside) as a single write, under an exclusive lock on the file."""
    data = (line + "\n").encode("utf-8")
    descriptor = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
    try:
        with _locked(descriptor):
            written = os.write(descriptor, data)
            if written != len(data):  # a regular file takes it whole unless the disk is full
                raise OSError(errno.ENOSPC, f"short write appending to {path}")
    finally:
        os.close(descriptor)


@contextlib.contextmanager
def _locked(descriptor: int) -> Iterator[bool]:
    """Wait for an exclusive lock on an open file and hold it while inside; yields whether it is held
    (False: the filesystem cannot lock)."""
    try:
        fcntl.lockf(descriptor, fcntl.LOCK_EX)
    except OSError as error:
        if error.errno in LOCKING_UNSUPPORTED:
            yield False
            return
        raise
    try:
        yield True
    finally:
        fcntl.lockf(descriptor, fcntl.LOCK_UN)


@contextlib.contextmanager
def exclusive_lock(path: Path) -> Iterator[bool]:
    """Wait for an exclusive lock on `path` (created if missing) and hold it while inside. Yields False,
    without waiting, where the filesystem cannot lock: the caller must be correct without the lock."""
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        with _locked(descriptor) as held:
            yield held
    finally:
        os.close(descriptor)


class HeldLock:
    """An exclusive lock on `path` held from `acquire` until `release` (e.g. for a process's lifetime);
    POSIX locks belong to the process and go with it when it dies."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.descriptor: int | None = None

    def acquire(self) -> LockState:
        """Take the lock without waiting: "held", "busy" (another process holds it) or "unsupported"."""
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
        """Give the lock up; remove=True also deletes the file (first, so nobody locks a name being freed)."""
        if self.descriptor is None:
            return
        if remove:
            self.path.unlink(missing_ok=True)
        os.close(self.descriptor)  # closing releases the process's locks on the file
        self.descriptor = None
