"""A real S3-compatible server for the tests: versitygw's posix backend (scripts/s3_server.sh builds it) on a
free local port, a directory per session. Tests that need it fail with one line saying why when it cannot be
built or started: they never skip."""

from __future__ import annotations

import os
import secrets
import socket
import subprocess
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from trainer.distributed import free_port

REPO = Path(__file__).resolve().parents[2]
SERVER_SCRIPT = REPO / "scripts" / "s3_server.sh"
REGION = "us-east-1"
BUILD_TIMEOUT_S = 1200  # a cold build took 118 s on 2 busy cores (scripts/s3_server.sh)


@dataclass
class S3Server:
    """A running versitygw: its endpoint, root credentials and the directory its posix backend serves."""

    endpoint: str
    access_key: str
    secret_key: str
    root: Path
    process: subprocess.Popen[bytes]

    def environment(self, **overrides: str) -> dict[str, str]:
        """The AWS SDK variables with which a trainer reaches this server."""
        return {
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "AWS_ENDPOINT_URL_S3": self.endpoint,
            "AWS_REGION": REGION,
            **overrides,
        }

    def client(self) -> Any:
        """A boto3 client of this server (path-style, as the trainer uses with an endpoint)."""
        return s3_client(self.endpoint, self.access_key, self.secret_key)

    def new_bucket(self) -> str:
        """A fresh, empty bucket (one per test: nothing of another test in it)."""
        name = f"ckpt-{uuid.uuid4().hex[:16]}"
        self.client().create_bucket(Bucket=name)
        return name


def s3_client(endpoint: str, access_key: str, secret_key: str) -> Any:
    """A boto3 client of the S3-compatible server at endpoint (path-style, as the trainer uses with one)."""
    boto3 = _boto3()
    from botocore.config import Config

    return boto3.session.Session().client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id=access_key,
        aws_secret_access_key=secret_key,
        region_name=REGION,
        config=Config(s3={"addressing_style": "path"}),
    )


def _boto3() -> Any:
    try:
        import boto3
    except ImportError:
        pytest.fail("boto3 is not installed: pip install -r requirements-dev.txt", pytrace=False)
    return boto3


def server_binary() -> Path:
    """scripts/s3_server.sh's binary, built if needed; fails the test with its one line if it cannot be."""
    try:
        built = subprocess.run(
            ["bash", str(SERVER_SCRIPT)], capture_output=True, text=True, timeout=BUILD_TIMEOUT_S
        )
    except subprocess.TimeoutExpired:
        pytest.fail(
            f"S3 test server: {SERVER_SCRIPT.name} did not finish within {BUILD_TIMEOUT_S} s", pytrace=False
        )
    if built.returncode != 0:
        why = (built.stderr.strip().splitlines() or ["no output"])[-1]
        pytest.fail(f"S3 test server unavailable: {why}", pytrace=False)
    return Path(built.stdout.strip().splitlines()[-1])


def start_server(root: Path) -> S3Server:
    """versitygw serving `root` on a free port, with fresh random root credentials; fails the test with
    one line if it does not answer within 30 s."""
    binary = server_binary()
    data = root / "data"
    data.mkdir(parents=True)
    port = free_port()
    access_key, secret_key = f"trainstack{secrets.token_hex(4)}", secrets.token_hex(16)
    log = root / "versitygw.log"
    env = {**os.environ, "ROOT_ACCESS_KEY_ID": access_key, "ROOT_SECRET_ACCESS_KEY": secret_key}
    with open(log, "wb") as output:
        process = subprocess.Popen(
            [str(binary), "--port", f"127.0.0.1:{port}", "--quiet", "posix", str(data)],
            env=env,
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    deadline = time.monotonic() + 30
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                tail = (log.read_text(errors="replace").strip().splitlines() or ["no output"])[-1]
                pytest.fail(f"S3 test server did not start ({binary}): {tail}", pytrace=False)
            time.sleep(0.1)
    return S3Server(f"http://127.0.0.1:{port}", access_key, secret_key, data, process)


def stop_server(server: S3Server) -> None:
    server.process.terminate()
    try:
        server.process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        server.process.kill()
        server.process.wait()
