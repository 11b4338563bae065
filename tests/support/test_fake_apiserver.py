"""The fake API server of the kubeconfig tests leaves nothing on disk, however its process ends."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest

from tests.support.fake_apiserver import certificates, fake_api_server


def test_certificates_and_server_leave_no_directory_behind(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """mutmut's workers end with os._exit (no atexit handler runs): a directory must be gone before that."""
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    made = certificates.__wrapped__()  # not the cached ones: made now, under tmp_path
    assert made.pem("ca.crt").startswith(b"-----BEGIN CERTIFICATE-----")
    assert list(tmp_path.iterdir()) == []
    with fake_api_server() as server:
        assert server.url.startswith("https://127.0.0.1:")
        assert list(tmp_path.iterdir()) == []
