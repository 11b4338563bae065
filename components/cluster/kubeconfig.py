"""A user's kubeconfig reduced to one context (`kubectl config view --minify --flatten`) and its API server
asked GET /version, before anything is created. Kept over the Kubernetes client's loader: docs/stack.md.
upstream: kubernetes/client-go tools/clientcmd (api/types.go, validation.go, loader.go)"""

from __future__ import annotations

import base64
import dataclasses
import functools
import http.client
import ipaddress
import json
import os
import socket
import ssl
import tempfile
import urllib.error
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml

from components.cluster.provider import ExistingCluster

KUBECONFIG_KEY = "kubeconfig"
KUBECONFIG_PATH_KEY = "kubeconfigPath"
KUBE_CONTEXT_KEY = "kubeContext"
CHECK_TIMEOUT_SECONDS = 10.0
# File references and the inline field each becomes (kubectl config view --flatten).
_CLUSTER_FILES = {"certificate-authority": "certificate-authority-data"}
_USER_FILES = {"client-certificate": "client-certificate-data", "client-key": "client-key-data"}


class KubeconfigError(ValueError):
    """`key`: the config key to fix; `problem`: what is wrong."""

    def __init__(self, key: str, problem: str) -> None:
        super().__init__(f"{key}: {problem}")
        self.key = key
        self.problem = problem


def read_kubeconfig(*, secret: str | None, path: str, context: str) -> ExistingCluster:
    """The kubeconfig from exactly one of the secret and the file, reduced to `context` (empty: current)."""
    if secret and path:
        raise KubeconfigError(
            KUBECONFIG_PATH_KEY, "and the kubeconfig secret may not both be set: keep one of them"
        )
    if secret:
        return parse_kubeconfig(secret, key=KUBECONFIG_KEY, context=context, base_dir=None)
    if not path:
        raise KubeconfigError(
            KUBECONFIG_PATH_KEY,
            "must name a kubeconfig file when clusterKind is existing"
            ' (or: pulumi config set --secret kubeconfig "$(cat ~/.kube/config)")',
        )
    file = Path(os.path.expanduser(path))  # pathlib's expanduser raises for ~unknown
    try:
        text = file.read_text()
    except OSError as error:
        raise KubeconfigError(KUBECONFIG_PATH_KEY, f"cannot read {file}: {error.strerror}") from None
    parsed = parse_kubeconfig(text, key=KUBECONFIG_PATH_KEY, context=context, base_dir=file.resolve().parent)
    # Read again at every run, unless it names relative paths, which pulumi-kubernetes does not resolve.
    # upstream: pulumi/pulumi-kubernetes provider/pkg/provider/util.go parseKubeconfigString @ v4.32.0
    return parsed if _relative_references(text) else dataclasses.replace(parsed, path=str(file.resolve()))


def _relative_references(text: str) -> bool:
    document = yaml.safe_load(text) or {}
    fields = (*_CLUSTER_FILES, *_USER_FILES, "tokenFile")
    for section, field in (("clusters", "cluster"), ("users", "user")):
        for entry in document.get(section) or []:
            for name in fields:
                value = str((entry.get(field) or {}).get(name) or "")
                if value and not Path(os.path.expanduser(value)).is_absolute():
                    return True
    return False


def _named(document: Mapping[str, Any], section: str, field: str, key: str) -> dict[str, dict[str, Any]]:
    """clusters, contexts or users as name -> mapping."""
    entries = document.get(section) or []
    if not isinstance(entries, list):
        raise KubeconfigError(key, f"{section} must be a list, got {type(entries).__name__}")
    named = {}
    for index, entry in enumerate(entries):
        if not isinstance(entry, dict) or not entry.get("name") or not isinstance(entry.get(field), dict):
            raise KubeconfigError(key, f"{section}[{index}] must have a name and a {field} mapping")
        named[str(entry["name"])] = dict(entry[field])
    return named


def _inline_files(
    entry: dict[str, Any], files: Mapping[str, str], where: str, key: str, base_dir: Path | None
) -> None:
    """Each file reference replaced by its content (base64, as the -data fields hold it)."""
    for field, data_field in files.items():
        if field not in entry:
            continue
        reference = entry.pop(field)
        if data_field in entry:
            continue  # client-go: the data field wins
        file = _resolve(reference, f"{where}.{field}", key, base_dir)
        try:
            entry[data_field] = base64.b64encode(file.read_bytes()).decode()
        except OSError as error:
            raise KubeconfigError(key, f"{where}.{field}: cannot read {file}: {error.strerror}") from None


def _resolve(value: Any, where: str, key: str, base_dir: Path | None) -> Path:
    reference = Path(os.path.expanduser(str(value)))
    if reference.is_absolute():
        return reference
    if base_dir is None:
        raise KubeconfigError(
            key, f"{where} is a relative path ({reference}); use an absolute path or the -data field"
        )
    return base_dir / reference


def parse_kubeconfig(text: str, *, key: str, context: str, base_dir: Path | None) -> ExistingCluster:
    """Reduced to one context, files inline; relative paths resolve against base_dir (None: errors)."""
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise KubeconfigError(key, f"is not YAML: {' '.join(str(error).split())}") from None
    if not isinstance(document, dict):
        raise KubeconfigError(key, "is not a kubeconfig: a YAML mapping with clusters, contexts and users")
    clusters = _named(document, "clusters", "cluster", key)
    contexts = _named(document, "contexts", "context", key)
    users = _named(document, "users", "user", key)
    name = context or str(document.get("current-context") or "")
    listed = ", ".join(sorted(contexts)) or "none"
    if not name:
        raise KubeconfigError(
            KUBE_CONTEXT_KEY,
            f"must name a context: the kubeconfig ({key}) has no current-context; its contexts: {listed}",
        )
    if name not in contexts:
        raise KubeconfigError(
            KUBE_CONTEXT_KEY if context else key,
            f"context {name!r} is not in the kubeconfig ({key}); its contexts: {listed}",
        )
    chosen = contexts[name]
    cluster_name, user_name = str(chosen.get("cluster") or ""), str(chosen.get("user") or "")
    for field, wanted, named in (("cluster", cluster_name, clusters), ("user", user_name, users)):
        if wanted not in named:
            raise KubeconfigError(key, f"context {name!r} names {field} {wanted!r}, which is not in {field}s")
    cluster, user = clusters[cluster_name], users[user_name]
    server = urlsplit(str(cluster.get("server") or ""))
    if server.scheme not in ("https", "http") or not server.hostname:
        raise KubeconfigError(
            key, f"cluster {cluster_name!r} needs a server https://host[:port], got {cluster.get('server')!r}"
        )
    _inline_files(cluster, _CLUSTER_FILES, f"clusters[{cluster_name}]", key, base_dir)
    _inline_files(user, _USER_FILES, f"users[{user_name}]", key, base_dir)
    if "tokenFile" in user:
        user["tokenFile"] = str(_resolve(user["tokenFile"], f"users[{user_name}].tokenFile", key, base_dir))
    reduced = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": cluster_name, "cluster": cluster}],
        "users": [{"name": user_name, "user": user}],
        "contexts": [{"name": name, "context": chosen}],
        "current-context": name,
    }
    return ExistingCluster(kubeconfig=yaml.safe_dump(reduced, sort_keys=False), context=name, source_key=key)


class _Connection(http.client.HTTPSConnection):
    """Verifies the server under the kubeconfig's tls-server-name."""

    def __init__(self, host: str, *, context: ssl.SSLContext, server_name: str | None, **kwargs: Any) -> None:
        super().__init__(host, context=context, **kwargs)
        self._tls = context
        self._server_name = server_name

    def connect(self) -> None:
        http.client.HTTPConnection.connect(self)  # TCP, and a proxy's CONNECT tunnel
        name = self._server_name or getattr(self, "_tunnel_host", None) or self.host
        self.sock = self._tls.wrap_socket(self.sock, server_hostname=name)


class _HTTPSHandler(urllib.request.HTTPSHandler):
    def __init__(self, context: ssl.SSLContext, server_name: str | None) -> None:
        super().__init__(context=context)
        self._connection = functools.partial(_Connection, context=context, server_name=server_name)

    def https_open(self, req: urllib.request.Request) -> http.client.HTTPResponse:
        return self.do_open(self._connection, req)


def _tls_context(cluster: Mapping[str, Any], user: Mapping[str, Any], private: Path) -> ssl.SSLContext:
    """upstream: kubernetes/client-go transport/transport.go rootCertPool @ v0.33 (the CA replaces the roots)"""
    authority = cluster.get("certificate-authority-data")
    cadata = base64.b64decode(authority).decode() if authority else None
    context = ssl.create_default_context(cadata=cadata)
    # Verify as Go does: Python 3.13's stricter X.509 rules reject some clusters' CAs that Go accepts.
    context.verify_flags &= ~getattr(ssl, "VERIFY_X509_STRICT", 0)
    if cluster.get("insecure-skip-tls-verify"):
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    if "client-certificate-data" in user and "client-key-data" in user:
        # ssl reads a certificate chain from files only: private ones, removed by the caller.
        certificate, key = private / "client.crt", private / "client.key"
        for file, field in ((certificate, "client-certificate-data"), (key, "client-key-data")):
            file.touch(mode=0o600)
            file.write_bytes(base64.b64decode(user[field]))
        context.load_cert_chain(certificate, key)
    return context


def _proxies(cluster: Mapping[str, Any], host: str, key: str) -> dict[str, str] | None:
    """proxy-url; else none for loopback; else the environment's (None), as client-go's."""
    proxy = str(cluster.get("proxy-url") or "")
    if proxy:
        if urlsplit(proxy).scheme not in ("http", "https"):
            raise KubeconfigError(
                key, f"proxy-url {proxy!r}: the stack's check supports http:// and https:// proxies"
            )
        return {"https": proxy, "http": proxy}
    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:  # a host name
        loopback = False
    return {} if loopback else None


def _credentials(cluster: ExistingCluster) -> tuple[dict[str, str], bool, bool]:
    """The user's request headers, whether it has static credentials, whether a plugin's."""
    document = yaml.safe_load(cluster.kubeconfig)
    user, user_name = document["users"][0]["user"], document["users"][0]["name"]
    headers = {"Accept": "application/json"}
    if user.get("token"):
        headers["Authorization"] = f"Bearer {user['token']}"
    elif user.get("tokenFile"):
        try:
            headers["Authorization"] = f"Bearer {Path(user['tokenFile']).read_text().strip()}"
        except OSError as error:
            raise KubeconfigError(
                cluster.source_key, f"users[{user_name}].tokenFile: cannot read it: {error.strerror}"
            ) from None
    elif user.get("username"):
        basic = base64.b64encode(f"{user['username']}:{user.get('password', '')}".encode()).decode()
        headers["Authorization"] = f"Basic {basic}"
    static = "Authorization" in headers or "client-certificate-data" in user
    plugin = "exec" in user or "auth-provider" in user
    return headers, static, plugin


def api_get(cluster: ExistingCluster, path: str, timeout: float = CHECK_TIMEOUT_SECONDS) -> tuple[int, bytes]:
    """(HTTP status, body); KubeconfigError when unreachable in time or the certificate does not verify."""
    document = yaml.safe_load(cluster.kubeconfig)
    entry, user = document["clusters"][0]["cluster"], document["users"][0]["user"]
    server = str(entry["server"]).rstrip("/")
    headers, _, _ = _credentials(cluster)
    with tempfile.TemporaryDirectory() as private:
        handlers: list[urllib.request.BaseHandler] = []
        if server.startswith("https://"):
            try:
                context = _tls_context(entry, user, Path(private))
            except (ssl.SSLError, ValueError) as error:
                raise KubeconfigError(
                    cluster.source_key,
                    f"the CA or client certificate of context {cluster.context!r} is unusable: {error}",
                ) from None
            handlers.append(_HTTPSHandler(context, entry.get("tls-server-name")))
        proxies = _proxies(entry, urlsplit(server).hostname or "", cluster.source_key)
        if proxies is not None:
            handlers.append(urllib.request.ProxyHandler(proxies))
        opener = urllib.request.build_opener(*handlers)
        request = urllib.request.Request(f"{server}{path}", headers=headers)
        try:
            with opener.open(request, timeout=timeout) as response:
                return response.status, response.read()
        except urllib.error.HTTPError as error:
            return error.code, b""
        except (urllib.error.URLError, OSError) as error:
            reason = getattr(error, "reason", error)
            if isinstance(reason, ssl.SSLCertVerificationError):
                problem = f"presents a certificate that does not verify: {reason.verify_message}"
            elif isinstance(reason, (TimeoutError, socket.timeout)):
                problem = f"does not answer within {timeout:g} s"
            else:
                problem = f"cannot be reached: {' '.join(str(reason).split())}"
            raise KubeconfigError(cluster.source_key, f"{_where(cluster)} {problem}") from None


def _where(cluster: ExistingCluster) -> str:
    server = str(yaml.safe_load(cluster.kubeconfig)["clusters"][0]["cluster"]["server"]).rstrip("/")
    return f"the API server {server} (context {cluster.context!r})"


def check_api_server(cluster: ExistingCluster, timeout: float = CHECK_TIMEOUT_SECONDS) -> str:
    """The API server's gitVersion; KubeconfigError as api_get's, or for rejected static credentials."""
    user_name = yaml.safe_load(cluster.kubeconfig)["users"][0]["name"]
    where = _where(cluster)
    _, static, plugin = _credentials(cluster)
    status, body = api_get(cluster, "/version", timeout)
    if status == 401 and static:
        raise KubeconfigError(
            cluster.source_key,
            f"{where} rejects the credentials of user {user_name!r} (HTTP 401 Unauthorized)",
        )
    if status == 401 and not plugin:
        raise KubeconfigError(
            cluster.source_key, f"{where} requires credentials and user {user_name!r} has none (HTTP 401)"
        )
    if status != 401 and not (200 <= status < 300 or status == 403):
        raise KubeconfigError(cluster.source_key, f"{where} answers GET /version with HTTP {status}")
    try:
        return str(json.loads(body).get("gitVersion", ""))
    except (ValueError, AttributeError):
        return ""


def with_namespace(kubeconfig: str, namespace: str) -> str:
    """`namespace` as the current context's (if any): kubectl and the Kubeflow SDK look where the job is."""
    document = yaml.safe_load(kubeconfig)
    current = document.get("current-context") if isinstance(document, dict) else None
    for entry in document.get("contexts") or [] if current else []:
        if entry.get("name") == current:
            entry.setdefault("context", {})["namespace"] = namespace
            return yaml.safe_dump(document, sort_keys=False)
    return kubeconfig


def read_custom_resource_definition(
    cluster: ExistingCluster, name: str, timeout: float = CHECK_TIMEOUT_SECONDS
) -> dict[str, Any] | None:
    """None when absent or unreadable (Helm's install says what it can); KubeconfigError as api_get's."""
    path = f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{name}"
    status, body = api_get(cluster, path, timeout)
    if status != 200:
        return None
    try:
        crd = json.loads(body)
    except ValueError:
        raise KubeconfigError(
            cluster.source_key, f"{_where(cluster)} answers GET {path} with no JSON"
        ) from None
    return crd if isinstance(crd, dict) else None
