"""The S3 test server's helpers (tests/support/s3_server.py): a server that cannot be built or started fails the
tests that need it, with one line saying why; it never skips them."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from tests.support import s3_server


def failure(call: Callable[[], object]) -> str:
    """The message with which call fails the test."""
    with pytest.raises(pytest.fail.Exception) as failed:
        call()
    return str(failed.value)


def test_a_server_that_cannot_be_built_fails_with_the_scripts_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    script = tmp_path / "s3_server.sh"
    script.write_text(
        "echo building >&2\necho 's3_server: go is not on PATH nor in /usr/local/go' >&2\nexit 1\n"
    )
    monkeypatch.setattr(s3_server, "SERVER_SCRIPT", script)
    assert failure(s3_server.server_binary) == (
        "S3 test server unavailable: s3_server: go is not on PATH nor in /usr/local/go"
    )


def test_a_server_that_does_not_start_fails_with_its_last_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    binary = tmp_path / "versitygw"
    binary.write_text("#!/bin/sh\necho 'Error: posix: no such directory'\nexit 1\n")
    binary.chmod(0o755)
    monkeypatch.setattr(s3_server, "server_binary", lambda: binary)
    message = failure(lambda: s3_server.start_server(tmp_path / "root"))
    assert message == f"S3 test server did not start ({binary}): Error: posix: no such directory"
