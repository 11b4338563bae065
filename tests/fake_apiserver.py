"""A stand-in Kubernetes API server over HTTPS on 127.0.0.1, for the checks of an existing cluster's kubeconfig.

It answers GET /version as kube-apiserver does: 200 with a version for a known bearer token, for a client
certificate its client CA signed, and (when allowed) for a request without credentials; 401 for any other
credentials. Its certificates are made once per test session with the openssl CLI: a CA, a server
certificate for 127.0.0.1 and `localhost`, a client certificate, and a second CA that signed nothing here.
"""

from __future__ import annotations

import atexit
import base64
import functools
import json
import shutil
import ssl
import subprocess
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import yaml

TOKEN = "fake-apiserver-token"
GIT_VERSION = "v1.33.1-fake"


@dataclass(frozen=True)
class Certificates:
    """PEM files: the CA, the server's and a client's certificate and key, and an unrelated CA."""

    directory: Path

    def path(self, name: str) -> Path:
        return self.directory / name

    def data(self, name: str) -> str:
        """A file's content as a kubeconfig's -data field holds it (base64)."""
        return base64.b64encode(self.path(name).read_bytes()).decode()


def _openssl(directory: Path, *args: str) -> None:
    subprocess.run(["openssl", *args], cwd=directory, check=True, capture_output=True)


@functools.cache
def certificates() -> Certificates:
    """Made once per process, removed at exit."""
    directory = Path(tempfile.mkdtemp(prefix="fake-apiserver-"))
    atexit.register(shutil.rmtree, directory, ignore_errors=True)
    curve = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    for ca in ("ca", "other-ca"):
        _openssl(
            directory, "req", "-x509", *curve, "-keyout", f"{ca}.key", "-out", f"{ca}.crt", "-days", "3650",
            "-subj", f"/CN={ca}", "-addext", "keyUsage=critical,keyCertSign,cRLSign",
        )  # fmt: skip
    leaves = {
        "server": "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n",
        "client": "extendedKeyUsage=clientAuth\n",
    }
    for leaf, extensions in leaves.items():
        (directory / f"{leaf}.ext").write_text(
            extensions + "keyUsage=critical,digitalSignature\nauthorityKeyIdentifier=keyid\n"
        )
        _openssl(
            directory, "req", *curve, "-keyout", f"{leaf}.key", "-out", f"{leaf}.csr", "-subj", f"/CN={leaf}"
        )
        _openssl(
            directory, "x509", "-req", "-in", f"{leaf}.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
            "-CAcreateserial", "-out", f"{leaf}.crt", "-days", "3650", "-extfile", f"{leaf}.ext",
        )  # fmt: skip
    return Certificates(directory)


@dataclass
class FakeApiServer:
    """A running fake API server; url is https://127.0.0.1:<port>."""

    url: str
    certs: Certificates
    # Paths requested, in order, with the credentials they came with ("token", "certificate" or "none").
    requests: list[tuple[str, str]] = field(default_factory=list)

    def kubeconfig(
        self, user: dict[str, Any] | None = None, cluster: dict[str, Any] | None = None, **document: Any
    ) -> str:
        """A kubeconfig with one context `fake` for this server: CA inline and the bearer token, unless given."""
        config: dict[str, Any] = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {
                    "name": "fake",
                    "cluster": cluster
                    if cluster is not None
                    else {"server": self.url, "certificate-authority-data": self.certs.data("ca.crt")},
                }
            ],
            "users": [{"name": "fake-user", "user": user if user is not None else {"token": TOKEN}}],
            "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "fake-user"}}],
            "current-context": "fake",
        }
        return yaml.safe_dump({**config, **document}, sort_keys=False)


@contextmanager
def fake_api_server(*, anonymous: bool = True) -> Iterator[FakeApiServer]:
    """Serves until the block ends. anonymous: whether a request without credentials gets 200 (else 401)."""
    certs = certificates()
    tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    tls.load_cert_chain(certs.path("server.crt"), certs.path("server.key"))
    tls.load_verify_locations(certs.path("ca.crt"))
    tls.verify_mode = ssl.CERT_OPTIONAL  # kube-apiserver: a client certificate is one way to authenticate
    requests: list[tuple[str, str]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            authorization = self.headers.get("Authorization", "")
            certificate = self.connection.getpeercert()
            if authorization:
                credentials, known = "token", authorization == f"Bearer {TOKEN}"
            elif certificate:
                credentials, known = "certificate", True  # verified by the TLS handshake
            else:
                credentials, known = "none", anonymous
            requests.append((self.path, credentials))
            status = 200 if known else 401
            body = json.dumps({"major": "1", "minor": "33", "gitVersion": GIT_VERSION}).encode()
            if status == 401:
                body = b'{"kind":"Status","code":401,"reason":"Unauthorized"}'
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.socket = tls.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    try:
        yield FakeApiServer(f"https://127.0.0.1:{server.server_address[1]}", certs, requests)
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
