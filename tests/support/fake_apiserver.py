"""A stand-in Kubernetes API server over HTTPS on 127.0.0.1, for the checks of an existing cluster's kubeconfig.

It answers GET /version as kube-apiserver does: 200 with a version for a known bearer token, a known user
name and password (basic authentication), a client certificate its client CA signed, and (when allowed) a
request without credentials; 401 for any other credentials; or a fixed status (a server in trouble). Its certificates are made once per process with the openssl CLI: a CA, a server
certificate for 127.0.0.1 and `localhost`, a client certificate, and a second CA that signed nothing here.

Nothing of it stays on disk: openssl works in a temporary directory removed as soon as the files are read
into memory, and the server loads its key from a second one removed right after. (Made once per process in
a directory removed by atexit, the certificates were left behind by every mutmut worker: mutmut's forked
workers end with os._exit, which runs no atexit handler, mutmut/workers/isolation.py; 78 and then over 600
/tmp/fake-apiserver-* directories were seen. A session fixture's finalizer would not run either when a
worker is killed at its time limit.)
"""

from __future__ import annotations

import base64
import functools
import json
import ssl
import subprocess
import tempfile
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import yaml

TOKEN = "fake-apiserver-token"
# The user name and password it knows (basic authentication).
USERNAME, PASSWORD = "fake-admin", "fake-password"
# A user it knows with an empty password (as a kubeconfig user with a username and no password).
NO_PASSWORD_USERNAME = "fake-no-password"
GIT_VERSION = "v1.33.1-fake"
# Where kube-apiserver serves the JobSet CRD (the stack reads it before anything is created).
JOBSET_CRD_PATH = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/jobsets.jobset.x-k8s.io"


# A CA as some clusters have one: Basic Constraints not marked critical, no key usage. Go (client-go, kubectl)
# accepts it; OpenSSL's X509_STRICT rules, which Python 3.13's ssl.create_default_context turns on, reject it.
LAX_CA_CONFIG = """[req]
distinguished_name = dn
x509_extensions = lax_ca
[dn]
[lax_ca]
basicConstraints = CA:TRUE
subjectKeyIdentifier = hash
"""
# The PEM files certificates() makes, by name.
PEM_FILES = ("ca.crt", "ca.key", "other-ca.crt", "server.crt", "server.key", "client.crt", "client.key")


@dataclass(frozen=True)
class Certificates:
    """PEM files' contents by name: the CA, the server's and a client's certificate and key, an unrelated CA."""

    files: dict[str, bytes]

    def pem(self, name: str) -> bytes:
        return self.files[name]

    def data(self, name: str) -> str:
        """A file's content as a kubeconfig's -data field holds it (base64)."""
        return base64.b64encode(self.pem(name)).decode()


def _openssl(directory: Path, *args: str) -> None:
    subprocess.run(["openssl", *args], cwd=directory, check=True, capture_output=True)


@functools.cache
def certificates(lax: bool = False) -> Certificates:
    """Made once per process, kept in memory (the directory openssl worked in is gone when this returns).

    lax: the CA (which signed the server's and the client's certificate) is made with LAX_CA_CONFIG.
    """
    with tempfile.TemporaryDirectory(prefix="fake-apiserver-") as name:
        directory = Path(name)
        _make_certificates(directory, lax=lax)
        return Certificates({file: (directory / file).read_bytes() for file in PEM_FILES})


def _make_certificates(directory: Path, *, lax: bool) -> None:
    curve = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    (directory / "lax-ca.cnf").write_text(LAX_CA_CONFIG)
    for ca in ("ca", "other-ca"):
        ca_extensions = (
            ["-config", "lax-ca.cnf"]
            if lax and ca == "ca"
            else ["-addext", "keyUsage=critical,keyCertSign,cRLSign"]
        )
        _openssl(
            directory, "req", "-x509", *curve, "-keyout", f"{ca}.key", "-out", f"{ca}.crt", "-days", "3650",
            "-subj", f"/CN={ca}", *ca_extensions,
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


@dataclass
class FakeApiServer:
    """A running fake API server; url is https://127.0.0.1:<port>."""

    url: str
    certs: Certificates
    # Paths requested, in order, with the credentials they came with ("token", "basic", "certificate", "none").
    requests: list[tuple[str, str]] = field(default_factory=list)
    # The Accept header of each request, in order ("" when absent).
    accepts: list[str] = field(default_factory=list)

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

    def stack_values(self, directory: Path) -> dict[str, str]:
        """The stack values of an existing cluster reached through this server (its kubeconfig in directory)."""
        kubeconfig = directory / "kubeconfig"
        kubeconfig.write_text(self.kubeconfig())
        return {
            "clusterKind": "existing",
            "kubeconfigPath": str(kubeconfig),
            "imagePush": "true",
            "imageRepository": "registry.example.com/trainer",
        }


def reply(
    handler: BaseHTTPRequestHandler, status: int, body: bytes, content_type: str = "application/json"
) -> None:
    """An HTTP answer with its length, as the API server sends it."""
    handler.send_response(status)
    handler.send_header("Content-Type", content_type)
    handler.send_header("Content-Length", str(len(body)))
    handler.end_headers()
    handler.wfile.write(body)


@contextmanager
def fake_api_server(
    *,
    anonymous: bool = True,
    status: int | None = None,
    lax: bool = False,
    git_version: str | None = GIT_VERSION,
    objects: Mapping[str, Any] | None = None,
) -> Iterator[FakeApiServer]:
    """Serves until the block ends. anonymous: whether a request without credentials gets 200 (else 401);
    status: the HTTP status of every answer instead (with a Status body), whatever the credentials;
    lax: certificates(lax=True); git_version: None for a version without gitVersion; objects: the JSON
    answer of further GET paths (as kube-apiserver lists or gets them); any other path not ending in /version is 404."""
    certs = certificates(lax)
    tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    with tempfile.TemporaryDirectory(prefix="fake-apiserver-") as name:  # ssl reads a key from files only
        for file in ("server.crt", "server.key"):
            (Path(name) / file).write_bytes(certs.pem(file))
        tls.load_cert_chain(Path(name) / "server.crt", Path(name) / "server.key")
    tls.load_verify_locations(cadata=certs.pem("ca.crt").decode())
    tls.verify_mode = ssl.CERT_OPTIONAL  # kube-apiserver: a client certificate is one way to authenticate
    requests: list[tuple[str, str]] = []
    accepts: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            authorization = self.headers.get("Authorization", "")
            certificate = self.connection.getpeercert()
            basic = [f"{USERNAME}:{PASSWORD}", f"{NO_PASSWORD_USERNAME}:"]
            if authorization.startswith("Basic "):
                known_basic = [f"Basic {base64.b64encode(pair.encode()).decode()}" for pair in basic]
                credentials, known = "basic", authorization in known_basic
            elif authorization:
                credentials, known = "token", authorization == f"Bearer {TOKEN}"
            elif certificate:
                credentials, known = "certificate", True  # verified by the TLS handshake
            else:
                credentials, known = "none", anonymous
            requests.append((self.path, credentials))
            accepts.append(self.headers.get("Accept", ""))
            answer = status or (200 if known else 401)
            version = {"major": "1", "minor": "33"} | (
                {} if git_version is None else {"gitVersion": git_version}
            )
            body = json.dumps(version).encode()
            if answer == 200 and not self.path.endswith("/version"):
                found = (objects or {}).get(self.path)
                answer = 404 if found is None else 200
                body = json.dumps(found).encode()
            if answer != 200:
                body = json.dumps({"kind": "Status", "code": answer}).encode()
            reply(self, answer, body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.socket = tls.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    try:
        yield FakeApiServer(f"https://127.0.0.1:{server.server_address[1]}", certs, requests, accepts)
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
