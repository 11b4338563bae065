"""trainer.shared_files: appends where the filesystem cannot lock, and the lock's other failures raised."""

from __future__ import annotations

import errno
from pathlib import Path

import pytest

from trainer import shared_files


@pytest.mark.parametrize(
    ("code", "appended"), [(errno.ENOLCK, True), (errno.EOPNOTSUPP, True), (errno.EIO, False)]
)
def test_append_line_without_a_lock_service(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, code: int, appended: bool
) -> None:
    def refused(*args: object) -> None:
        raise OSError(code, "refused")

    path = tmp_path / "metrics.jsonl"
    shared_files.append_line(path, "first")
    monkeypatch.setattr(shared_files.fcntl, "lockf", refused)
    if appended:
        shared_files.append_line(path, "second")
    else:
        with pytest.raises(OSError):
            shared_files.append_line(path, "second")
    assert path.read_text() == ("first\nsecond\n" if appended else "first\n")
