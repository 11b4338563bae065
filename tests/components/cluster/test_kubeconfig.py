"""An existing cluster's kubeconfig: parsed, reduced to one context, and its API server asked (a fake one)."""

from __future__ import annotations

import base64
import contextlib
import socket
import socketserver
import ssl
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import yaml

from components.cluster.kubeconfig import (
    KUBE_CONTEXT_KEY,
    KUBECONFIG_KEY,
    KUBECONFIG_PATH_KEY,
    KubeconfigError,
    _proxies,
    check_api_server,
    parse_kubeconfig,
    read_custom_resource_definition,
    read_kubeconfig,
    with_namespace,
)
from tests.support.fake_apiserver import (
    GIT_VERSION,
    JOBSET_CRD_PATH,
    NO_PASSWORD_USERNAME,
    PASSWORD,
    TOKEN,
    USERNAME,
    FakeApiServer,
    fake_api_server,
)
from trainer.distributed import free_port


@pytest.fixture
def server() -> Iterator[FakeApiServer]:
    with fake_api_server() as running:
        yield running


def two_contexts(server: FakeApiServer) -> dict[str, object]:
    """A kubeconfig with the fake cluster and another one, as ~/.kube/config often has."""
    document = yaml.safe_load(server.kubeconfig())
    document["clusters"].append({"name": "prod", "cluster": {"server": "https://203.0.113.9:6443"}})
    document["users"].append({"name": "prod-admin", "user": {"token": "prod-secret"}})
    document["contexts"].append({"name": "prod", "context": {"cluster": "prod", "user": "prod-admin"}})
    document["current-context"] = "prod"
    return document


def parse(text: str, context: str = "", base_dir: Path | None = None) -> Any:
    return yaml.safe_load(
        parse_kubeconfig(text, key=KUBECONFIG_KEY, context=context, base_dir=base_dir).kubeconfig
    )


def test_the_kubeconfig_is_reduced_to_the_chosen_context_alone(server: FakeApiServer) -> None:
    text = yaml.safe_dump(two_contexts(server))
    reduced = parse(text, context="fake")
    assert reduced["current-context"] == "fake"
    assert [entry["name"] for entry in reduced["clusters"]] == ["fake"]
    assert [entry["name"] for entry in reduced["users"]] == ["fake-user"]
    assert "prod-secret" not in yaml.safe_dump(reduced)  # another cluster's credentials stay out of the stack
    assert parse(text)["current-context"] == "prod"  # no kubeContext: the current-context


def test_the_reduced_kubeconfig_is_a_whole_kubeconfig_of_one_context() -> None:
    """As `kubectl config view --minify --flatten` writes it: a Config of v1 whose lists hold one entry each."""
    text = (
        "current-context: b\n"
        "contexts:\n"
        "- {name: a, context: {cluster: a, user: a}}\n"
        "- {name: b, context: {cluster: b, user: b, namespace: ml}}\n"
        "clusters:\n"
        "- {name: a, cluster: {server: 'https://192.0.2.1:6443'}}\n"
        "- {name: b, cluster: {server: 'https://192.0.2.2:6443', certificate-authority-data: Y2E=}}\n"
        "users:\n"
        "- {name: a, user: {token: a-secret}}\n"
        "- {name: b, user: {token: b-secret}}\n"
    )
    assert parse(text) == {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": "b",
                "cluster": {"server": "https://192.0.2.2:6443", "certificate-authority-data": "Y2E="},
            }
        ],
        "users": [{"name": "b", "user": {"token": "b-secret"}}],
        "contexts": [{"name": "b", "context": {"cluster": "b", "user": "b", "namespace": "ml"}}],
        "current-context": "b",
    }


def test_the_kubeconfig_secret_takes_the_context_too(server: FakeApiServer) -> None:
    cluster = read_kubeconfig(secret=yaml.safe_dump(two_contexts(server)), path="", context="fake")
    assert (cluster.context, cluster.source_key) == ("fake", KUBECONFIG_KEY)
    assert yaml.safe_load(cluster.kubeconfig)["current-context"] == "fake"
    with pytest.raises(KubeconfigError, match="relative path"):  # no file: no directory to resolve against
        read_kubeconfig(
            secret=server.kubeconfig(cluster={"server": server.url, "certificate-authority": "ca.crt"}),
            path="",
            context="",
        )


def client_files(server: FakeApiServer, directory: Path) -> None:
    """pki/ca.crt, pki/client.crt, pki/client.key and token in directory, for file references to them."""
    (directory / "pki").mkdir()
    for name in ("ca.crt", "client.crt", "client.key"):
        (directory / "pki" / name).write_bytes(server.certs.pem(name))
    (directory / "token").write_text(TOKEN + "\n")


def test_certificate_files_are_inlined_relative_to_the_kubeconfig_and_token_files_made_absolute(
    server: FakeApiServer, tmp_path: Path
) -> None:
    client_files(server, tmp_path)
    kubeconfig = tmp_path / "config"
    kubeconfig.write_text(
        server.kubeconfig(
            cluster={"server": server.url, "certificate-authority": "pki/ca.crt"},
            user={
                "client-certificate": "pki/client.crt",
                "client-key": "pki/client.key",
                "tokenFile": "token",
            },
        )
    )
    cluster = read_kubeconfig(secret=None, path=str(kubeconfig), context="")
    reduced = yaml.safe_load(cluster.kubeconfig)
    entry, user = reduced["clusters"][0]["cluster"], reduced["users"][0]["user"]
    assert base64.b64decode(entry["certificate-authority-data"]) == server.certs.pem("ca.crt")
    assert base64.b64decode(user["client-key-data"]) == server.certs.pem("client.key")
    assert "certificate-authority" not in entry and "client-certificate" not in user
    assert user["tokenFile"] == str(tmp_path / "token")
    assert cluster.source_key == KUBECONFIG_PATH_KEY
    assert check_api_server(cluster) == GIT_VERSION
    # Relative references: pulumi-kubernetes would not resolve them against the file, so the stack keeps the
    # inlined copy rather than handing the provider the path (issue 23, case 9).
    assert cluster.path == ""
    absolute = tmp_path / "absolute"
    absolute.write_text(
        server.kubeconfig(
            cluster={"server": server.url, "certificate-authority": str(tmp_path / "pki" / "ca.crt")}
        )
    )
    assert read_kubeconfig(secret=None, path=str(absolute), context="").path == str(absolute)
    assert server.requests == [("/version", "token")]  # the token goes first, as in client-go


BAD_KUBECONFIGS = [
    # PyYAML's own message, its lines joined into one.
    ("{a: [", KUBECONFIG_KEY, "is not YAML: while parsing a flow node expected the node content, but found"),
    (
        "- just\n- a list\n",
        KUBECONFIG_KEY,
        "is not a kubeconfig: a YAML mapping with clusters, contexts and users",
    ),
    ("clusters: {a: 1}\n", KUBECONFIG_KEY, "clusters must be a list, got dict"),
    ("contexts:\n- name: x\n", KUBECONFIG_KEY, "contexts[0] must have a name and a context mapping"),
    (
        "contexts:\n- {context: {cluster: a}}\n",
        KUBECONFIG_KEY,
        "contexts[0] must have a name and a context mapping",
    ),
    ("users:\n- {name: u}\n", KUBECONFIG_KEY, "users[0] must have a name and a user mapping"),
    ("contexts: []\n", KUBE_CONTEXT_KEY, "has no current-context; its contexts: none"),
    (
        "contexts:\n- {name: b, context: {cluster: b}}\n- {name: a, context: {cluster: a}}\n",
        KUBE_CONTEXT_KEY,
        "must name a context: the kubeconfig (kubeconfig) has no current-context; its contexts: a, b",
    ),
    (
        "current-context: gone\n",
        KUBECONFIG_KEY,
        "context 'gone' is not in the kubeconfig (kubeconfig); its contexts: none",
    ),
    (
        "current-context: a\ncontexts:\n- {name: a, context: {cluster: a}}\nclusters:\n"
        "- {name: a, cluster: {server: 'https://h:6443'}}\n",
        KUBECONFIG_KEY,
        "context 'a' names user '', which is not in users",
    ),
    (
        "current-context: a\ncontexts:\n- {name: a, context: {cluster: a, user: u}}\nusers:\n- {name: u, user: {}}\n"
        "clusters:\n- {name: a, cluster: {server: 'ftp://h:21'}}\n",
        KUBECONFIG_KEY,
        "cluster 'a' needs a server https://host[:port], got 'ftp://h:21'",
    ),
    (
        "current-context: a\ncontexts:\n- {name: a, context: {cluster: a, user: u}}\n"
        "users:\n- {name: u, user: {tokenFile: token}}\nclusters:\n- {name: a, cluster: {server: 'https://h'}}\n",
        KUBECONFIG_KEY,
        "users[u].tokenFile is a relative path (token); use an absolute path or the -data field",
    ),
    (
        "current-context: a\ncontexts:\n- {name: a, context: {user: a}}\n",
        KUBECONFIG_KEY,
        "context 'a' names cluster '', which is not in clusters",
    ),
    (
        "current-context: gone\ncontexts:\n- {name: a, context: {cluster: a, user: a}}\n",
        KUBECONFIG_KEY,
        "context 'gone' is not in the kubeconfig (kubeconfig); its contexts: a",
    ),
    (
        "current-context: a\ncontexts:\n- {name: a, context: {cluster: a, user: a}}\n",
        KUBECONFIG_KEY,
        "context 'a' names cluster 'a', which is not in clusters",
    ),
    (
        "current-context: a\ncontexts:\n- {name: a, context: {cluster: a, user: u}}\nclusters:\n"
        "- {name: a, cluster: {server: 'https://h:6443'}}\n",
        KUBECONFIG_KEY,
        "context 'a' names user 'u', which is not in users",
    ),
    (
        "current-context: a\ncontexts:\n- {name: a, context: {cluster: a, user: u}}\nusers:\n- {name: u, user: {}}\n"
        "clusters:\n- {name: a, cluster: {server: 'h:6443'}}\n",
        KUBECONFIG_KEY,
        "cluster 'a' needs a server https://host[:port], got 'h:6443'",
    ),
    (
        "current-context: a\ncontexts:\n- {name: a, context: {cluster: a, user: u}}\nusers:\n- {name: u, user: {}}\n"
        "clusters:\n- {name: a, cluster: {server: 'https://h', certificate-authority: ca.crt}}\n",
        KUBECONFIG_KEY,
        "clusters[a].certificate-authority is a relative path (ca.crt); use an absolute path or the -data field",
    ),
]


@pytest.mark.parametrize(("text", "key", "problem"), BAD_KUBECONFIGS)
def test_a_bad_kubeconfig_is_one_line_naming_the_key(text: str, key: str, problem: str) -> None:
    with pytest.raises(KubeconfigError) as raised:
        parse_kubeconfig(text, key=KUBECONFIG_KEY, context="", base_dir=None)
    assert raised.value.key == key
    assert problem in raised.value.problem and "\n" not in str(raised.value)


def test_a_missing_context_names_kube_context_and_lists_the_contexts(server: FakeApiServer) -> None:
    with pytest.raises(KubeconfigError) as raised:
        parse(yaml.safe_dump(two_contexts(server)), context="staging")
    assert raised.value.key == KUBE_CONTEXT_KEY
    assert (
        raised.value.problem
        == "context 'staging' is not in the kubeconfig (kubeconfig); its contexts: fake, prod"
    )


def test_an_unreadable_certificate_file_is_named(server: FakeApiServer, tmp_path: Path) -> None:
    kubeconfig = tmp_path / "config"
    kubeconfig.write_text(
        server.kubeconfig(cluster={"server": server.url, "certificate-authority": "pki/ca.crt"})
    )
    with pytest.raises(KubeconfigError) as raised:
        read_kubeconfig(secret=None, path=str(kubeconfig), context="")
    assert raised.value.key == KUBECONFIG_PATH_KEY
    assert raised.value.problem == (
        f"clusters[fake].certificate-authority: cannot read {tmp_path}/pki/ca.crt: No such file or directory"
    )


def test_an_unreadable_token_file_stops_the_check(server: FakeApiServer, tmp_path: Path) -> None:
    """The file is read when the check runs (it may be rotated meanwhile): its problem names the key."""
    with pytest.raises(KubeconfigError) as raised:
        check(server.kubeconfig(user={"tokenFile": str(tmp_path / "gone")}))
    assert raised.value.key == KUBECONFIG_KEY
    assert raised.value.problem == "users[fake-user].tokenFile: cannot read it: No such file or directory"
    assert server.requests == []


def test_exactly_one_source_of_kubeconfig(tmp_path: Path) -> None:
    with pytest.raises(
        KubeconfigError, match=r"^kubeconfigPath: and the kubeconfig secret may not both be set"
    ):
        read_kubeconfig(secret="apiVersion: v1", path="~/.kube/config", context="")
    with pytest.raises(
        KubeconfigError, match=r"^kubeconfigPath: must name a kubeconfig file when clusterKind"
    ):
        read_kubeconfig(secret=None, path="", context="")
    with pytest.raises(KubeconfigError, match=f"^kubeconfigPath: cannot read {tmp_path}/none: No such file"):
        read_kubeconfig(secret=None, path=str(tmp_path / "none"), context="")


def check(text: str, timeout: float = 5.0) -> str:
    return check_api_server(parse_kubeconfig(text, key=KUBECONFIG_KEY, context="", base_dir=None), timeout)


def test_a_bearer_token_is_checked(server: FakeApiServer) -> None:
    assert check(server.kubeconfig()) == GIT_VERSION
    with pytest.raises(KubeconfigError) as raised:
        check(server.kubeconfig(user={"token": "stale"}))
    assert raised.value.problem == (
        f"the API server {server.url} (context 'fake') rejects the credentials of user 'fake-user'"
        " (HTTP 401 Unauthorized)"
    )
    assert server.requests == [("/version", "token"), ("/version", "token")]


def test_the_check_asks_for_json(server: FakeApiServer) -> None:
    """The check parses the answer as JSON: it asks for that representation (the API server also speaks
    YAML and protobuf, and go-restful answers 406 to an Accept header a route does not produce)."""
    check(server.kubeconfig())
    assert server.accepts == ["application/json"]


def test_the_reduced_kubeconfig_keeps_kubectl_s_key_order() -> None:
    """The kubeconfig output reads like one kubectl writes: apiVersion and kind first, not sorted keys."""
    with fake_api_server() as server:
        reduced = parse_kubeconfig(server.kubeconfig(), key=KUBECONFIG_KEY, context="", base_dir=None)
    assert list(yaml.safe_load(reduced.kubeconfig)) == [
        "apiVersion",
        "kind",
        "clusters",
        "users",
        "contexts",
        "current-context",
    ]


def test_a_proxy_url_serves_http_and_https_servers_alike() -> None:
    """client-go's http.ProxyURL: the kubeconfig's proxy-url carries every request, whatever the scheme."""
    proxy = "http://proxy.example:3128"
    assert _proxies({"proxy-url": proxy}, "api.example", KUBECONFIG_KEY) == {"https": proxy, "http": proxy}


def test_a_user_name_and_password_are_sent_as_basic_authentication(server: FakeApiServer) -> None:
    assert check(server.kubeconfig(user={"username": USERNAME, "password": PASSWORD})) == GIT_VERSION
    with pytest.raises(KubeconfigError, match="rejects the credentials of user 'fake-user'"):
        check(server.kubeconfig(user={"username": USERNAME, "password": "wrong"}))
    assert server.requests == [("/version", "basic"), ("/version", "basic")]


def test_the_version_is_asked_under_the_server_s_path_without_a_doubled_slash(server: FakeApiServer) -> None:
    """A server URL may end in a slash, or have a path (Rancher's proxy: https://<rancher>/k8s/clusters/<id>)."""
    ca = server.certs.data("ca.crt")
    for suffix in ("/", "/k8s/clusters/c-m-X9ZX/"):
        assert check(
            server.kubeconfig(cluster={"server": server.url + suffix, "certificate-authority-data": ca})
        )
    assert server.requests == [("/version", "token"), ("/k8s/clusters/c-m-X9ZX/version", "token")]


@pytest.mark.parametrize("status", [300, 404, 500, 503])
def test_a_server_that_answers_with_an_error_stops_the_check(status: int) -> None:
    with fake_api_server(status=status) as server, pytest.raises(KubeconfigError) as raised:
        check(server.kubeconfig())
    assert raised.value.key == KUBECONFIG_KEY
    assert raised.value.problem == (
        f"the API server {server.url} (context 'fake') answers GET /version with HTTP {status}"
    )


def test_forbidden_still_proves_the_server_and_the_credentials() -> None:
    """403: the user is known (authenticated) but may not read /version (kube-apiserver's RBAC); no version."""
    with fake_api_server(status=403) as server:
        assert check(server.kubeconfig()) == ""


def test_a_client_certificate_is_presented(server: FakeApiServer) -> None:
    user = {
        "client-certificate-data": server.certs.data("client.crt"),
        "client-key-data": server.certs.data("client.key"),
    }
    assert check(server.kubeconfig(user=user)) == GIT_VERSION
    assert server.requests == [("/version", "certificate")]


def test_a_server_certificate_of_another_ca_stops_the_check(server: FakeApiServer) -> None:
    cluster = {"server": server.url, "certificate-authority-data": server.certs.data("other-ca.crt")}
    with pytest.raises(KubeconfigError, match="presents a certificate that does not verify"):
        check(server.kubeconfig(cluster=cluster))
    assert server.requests == []  # nothing, not even the token, was sent


def test_a_ca_that_go_accepts_is_accepted_under_python_3_13_s_stricter_defaults(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Python 3.13's ssl.create_default_context adds VERIFY_X509_STRICT and VERIFY_X509_PARTIAL_CHAIN to
    verify_flags (What's New in Python 3.13, ssl); kubectl's Go verifier has no such rules, so the check drops
    STRICT. Here every Python makes its default context as 3.13 does."""
    made = ssl.create_default_context

    def like_python_3_13(*args: Any, **kwargs: Any) -> ssl.SSLContext:
        context = made(*args, **kwargs)
        context.verify_flags |= ssl.VERIFY_X509_STRICT | ssl.VERIFY_X509_PARTIAL_CHAIN
        return context

    monkeypatch.setattr(ssl, "create_default_context", like_python_3_13)
    with fake_api_server(lax=True) as server:
        # The premise: with those flags as they are, this server's certificate does not verify.
        strict = like_python_3_13(cadata=server.certs.pem("ca.crt").decode())
        address = ("127.0.0.1", int(server.url.rsplit(":", 1)[1]))
        with (
            pytest.raises(
                ssl.SSLCertVerificationError, match="Basic Constraints of CA cert not marked critical"
            ),
            socket.create_connection(address) as connection,
        ):
            strict.wrap_socket(connection, server_hostname="127.0.0.1")
        assert check(server.kubeconfig()) == GIT_VERSION


def test_insecure_skip_tls_verify_accepts_any_certificate(server: FakeApiServer) -> None:
    assert (
        check(server.kubeconfig(cluster={"server": server.url, "insecure-skip-tls-verify": True}))
        == GIT_VERSION
    )
    # Without it, and without a CA, the system's CAs do not know the fake server.
    with pytest.raises(KubeconfigError, match="does not verify"):
        check(server.kubeconfig(cluster={"server": server.url}))


def test_tls_server_name_is_the_name_verified(server: FakeApiServer) -> None:
    ca = server.certs.data("ca.crt")
    named = {"server": server.url, "certificate-authority-data": ca, "tls-server-name": "localhost"}
    assert check(server.kubeconfig(cluster=named)) == GIT_VERSION
    with pytest.raises(KubeconfigError, match="does not verify: Hostname mismatch"):
        check(server.kubeconfig(cluster={**named, "tls-server-name": "wrong.example"}))


def test_an_unreachable_server_stops_the_check_with_one_line(server: FakeApiServer) -> None:
    port = free_port()
    cluster = {
        "server": f"https://127.0.0.1:{port}",
        "certificate-authority-data": server.certs.data("ca.crt"),
    }
    with pytest.raises(KubeconfigError) as raised:
        check(server.kubeconfig(cluster=cluster))
    assert raised.value.key == KUBECONFIG_KEY
    assert raised.value.problem.startswith(
        f"the API server https://127.0.0.1:{port} (context 'fake') cannot be reached:"
    )
    assert "refused" in raised.value.problem and "\n" not in raised.value.problem


def test_a_server_that_never_answers_times_out(server: FakeApiServer) -> None:
    with socket.socket() as silent:  # accepts connections (the kernel does) and never speaks
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        url = f"https://127.0.0.1:{silent.getsockname()[1]}"
        cluster = {"server": url, "certificate-authority-data": server.certs.data("ca.crt")}
        with pytest.raises(KubeconfigError, match=r"does not answer within 0.3 s$"):
            check(server.kubeconfig(cluster=cluster), timeout=0.3)


def test_plugin_credentials_are_checked_for_reachability_only() -> None:
    with fake_api_server(anonymous=False) as server:
        exec_user = {"exec": {"apiVersion": "client.authentication.k8s.io/v1", "command": "get-token"}}
        assert check(server.kubeconfig(user=exec_user)) == ""  # 401 without credentials: it answers
        auth_provider = {"auth-provider": {"name": "oidc", "config": {"client-id": "kubernetes"}}}
        assert check(server.kubeconfig(user=auth_provider)) == ""
        with pytest.raises(KubeconfigError, match="requires credentials and user 'fake-user' has none"):
            check(server.kubeconfig(user={}))
        assert server.requests == [("/version", "none")] * 3


@contextmanager
def connect_proxy(
    host: str = "127.0.0.1", routes: dict[str, str] | None = None
) -> Iterator[tuple[str, list[str]]]:
    """An HTTP CONNECT proxy on host: yields its URL and the targets it tunnelled to. routes: the address
    (host:port) a target reaches instead (as a proxy that resolves names the client cannot)."""
    targets: list[str] = []

    class Tunnel(socketserver.BaseRequestHandler):
        def handle(self) -> None:
            head = b""
            while b"\r\n\r\n" not in head:
                head += self.request.recv(1024)
            target = head.split()[1].decode()
            targets.append(target)
            address, port = (routes or {}).get(target, target).rsplit(":", 1)
            with socket.create_connection((address, int(port))) as upstream:
                self.request.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
                threading.Thread(target=pipe, args=(self.request, upstream), daemon=True).start()
                pipe(upstream, self.request)  # until the server closes the connection

    def pipe(source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass

    server = socketserver.ThreadingTCPServer((host, 0), Tunnel)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    try:
        yield f"http://{host}:{server.server_address[1]}", targets
    finally:
        server.shutdown()
        server.server_close()


def test_proxy_url_tunnels_the_check_and_the_server_is_verified_under_its_own_name(
    server: FakeApiServer,
) -> None:
    """Through a tunnel, the certificate must name the API server, not the proxy (here 127.0.0.2, which the
    server's certificate does not name: Linux answers on all of 127.0.0.0/8)."""
    with connect_proxy(host="127.0.0.2") as (proxy, targets):
        cluster = {
            "server": server.url,
            "certificate-authority-data": server.certs.data("ca.crt"),
            "proxy-url": proxy,
        }
        assert check(server.kubeconfig(cluster=cluster)) == GIT_VERSION
    assert targets == [server.url.removeprefix("https://")]
    with pytest.raises(KubeconfigError) as raised:
        check(server.kubeconfig(cluster={**cluster, "proxy-url": "socks5://127.0.0.1:1080"}))
    assert raised.value.key == KUBECONFIG_KEY
    assert raised.value.problem == (
        "proxy-url 'socks5://127.0.0.1:1080': the stack's check supports http:// and https:// proxies"
    )


def test_the_environment_s_proxy_is_used_for_a_server_named_by_host_name(
    server: FakeApiServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A name that is not an address is not loopback: HTTPS_PROXY carries the check (kube.example resolves
    only at the proxy, which routes it to the fake server)."""
    port = server.url.rsplit(":", 1)[1]
    with connect_proxy(routes={f"kube.example:{port}": f"127.0.0.1:{port}"}) as (proxy, targets):
        for variable in ("HTTPS_PROXY", "https_proxy"):
            monkeypatch.setenv(variable, proxy)
        monkeypatch.delenv("NO_PROXY", raising=False)
        monkeypatch.delenv("no_proxy", raising=False)
        cluster = {
            "server": f"https://kube.example:{port}",
            "certificate-authority-data": server.certs.data("ca.crt"),
            "tls-server-name": "localhost",
        }
        assert check(server.kubeconfig(cluster=cluster)) == GIT_VERSION
    assert targets == [f"kube.example:{port}"]


def test_the_environment_s_proxy_is_not_used_for_a_loopback_server(
    server: FakeApiServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    dead_proxy = f"http://127.0.0.1:{free_port()}"
    for variable in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy"):
        monkeypatch.setenv(variable, dead_proxy)
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    assert check(server.kubeconfig()) == GIT_VERSION


def test_a_plain_http_server_is_accepted() -> None:
    """client-go talks to an http:// server too (no TLS): the kubeconfig is taken as it is."""
    text = (
        "current-context: a\ncontexts:\n- {name: a, context: {cluster: a, user: u}}\nusers:\n- {name: u, user: {}}\n"
        "clusters:\n- {name: a, cluster: {server: 'http://192.0.2.1:8080'}}\n"
    )
    assert parse(text)["clusters"] == [{"name": "a", "cluster": {"server": "http://192.0.2.1:8080"}}]


def test_the_kubeconfig_file_takes_the_context_too(server: FakeApiServer, tmp_path: Path) -> None:
    kubeconfig = tmp_path / "config"
    kubeconfig.write_text(yaml.safe_dump(two_contexts(server)))  # its current-context: prod
    cluster = read_kubeconfig(secret=None, path=str(kubeconfig), context="fake")
    assert cluster.context == "fake" and yaml.safe_load(cluster.kubeconfig)["current-context"] == "fake"


def test_no_kubeconfig_at_all_says_how_to_give_one() -> None:
    with pytest.raises(KubeconfigError) as raised:
        read_kubeconfig(secret=None, path="", context="")
    assert raised.value.key == KUBECONFIG_PATH_KEY
    assert raised.value.problem == (
        "must name a kubeconfig file when clusterKind is existing"
        ' (or: pulumi config set --secret kubeconfig "$(cat ~/.kube/config)")'
    )


def test_each_user_file_is_inlined_unless_its_data_field_is_there(
    server: FakeApiServer, tmp_path: Path
) -> None:
    """client-go: a -data field wins over its file (never read then); every other file is still inlined."""
    (tmp_path / "client.key").write_bytes(server.certs.pem("client.key"))
    certificate = server.certs.data("client.crt")
    for user in (
        {"client-certificate-data": certificate, "client-key": "client.key"},  # no client-certificate at all
        {
            "client-certificate": "gone.crt",
            "client-certificate-data": certificate,
            "client-key": "client.key",
        },
    ):
        kubeconfig = tmp_path / "config"
        kubeconfig.write_text(server.kubeconfig(user=user))
        reduced = yaml.safe_load(read_kubeconfig(secret=None, path=str(kubeconfig), context="").kubeconfig)
        assert reduced["users"][0]["user"] == {
            "client-certificate-data": certificate,
            "client-key-data": server.certs.data("client.key"),
        }


def test_an_unreadable_client_key_file_is_named(server: FakeApiServer, tmp_path: Path) -> None:
    kubeconfig = tmp_path / "config"
    kubeconfig.write_text(
        server.kubeconfig(user={"client-certificate-data": "Y2E=", "client-key": "gone.key"})
    )
    with pytest.raises(KubeconfigError) as raised:
        read_kubeconfig(secret=None, path=str(kubeconfig), context="")
    assert raised.value.key == KUBECONFIG_PATH_KEY
    assert raised.value.problem == (
        f"users[fake-user].client-key: cannot read {tmp_path}/gone.key: No such file or directory"
    )


def test_an_unusable_ca_stops_the_check_naming_the_key(server: FakeApiServer) -> None:
    not_a_certificate = base64.b64encode(b"-----BEGIN CERTIFICATE-----\nbm90\n-----END CERTIFICATE-----\n")
    with pytest.raises(KubeconfigError) as raised:
        check(
            server.kubeconfig(
                cluster={"server": server.url, "certificate-authority-data": not_a_certificate.decode()}
            )
        )
    assert raised.value.key == KUBECONFIG_KEY
    assert raised.value.problem.startswith("the CA or client certificate of context 'fake' is unusable: ")
    assert server.requests == []


def test_a_401_names_the_key_whatever_the_credentials() -> None:
    with fake_api_server(anonymous=False) as server:
        for user, problem in (
            ({}, "requires credentials and user 'fake-user' has none (HTTP 401)"),
            ({"token": "wrong"}, "rejects the credentials of user 'fake-user' (HTTP 401 Unauthorized)"),
        ):
            with pytest.raises(KubeconfigError) as raised:
                check(server.kubeconfig(user=user))
            assert raised.value.key == KUBECONFIG_KEY
            assert raised.value.problem == f"the API server {server.url} (context 'fake') {problem}"


def test_a_rejected_token_file_or_client_certificate_is_rejected_credentials(tmp_path: Path) -> None:
    """A 401 to a token read from its file, or to a client certificate, says the credentials were refused (not
    that there were none)."""
    (tmp_path / "token").write_text("wrong\n")
    with fake_api_server(status=401) as server:
        certificate = {
            name: server.certs.data(file)
            for name, file in (("client-certificate-data", "client.crt"), ("client-key-data", "client.key"))
        }
        for user in ({"tokenFile": str(tmp_path / "token")}, certificate):
            with pytest.raises(
                KubeconfigError, match=r"rejects the credentials of user 'fake-user' \(HTTP 401"
            ):
                check(server.kubeconfig(user=user))
        assert server.requests == [("/version", "token"), ("/version", "certificate")]


def test_a_client_certificate_without_its_key_is_not_used(server: FakeApiServer) -> None:
    """Only a certificate and its key together make a client certificate; the token still authenticates."""
    user = {"token": TOKEN, "client-certificate-data": server.certs.data("client.crt")}
    assert check(server.kubeconfig(user=user)) == GIT_VERSION
    assert server.requests == [("/version", "token")]


def test_a_server_that_closes_the_connection_cannot_be_reached() -> None:
    """http.client's error for a server that answers nothing (no URLError around it) is the problem."""
    listener = socket.create_server(("127.0.0.1", 0))

    def close_each() -> None:
        with contextlib.suppress(OSError):
            while True:
                connection, _ = listener.accept()
                connection.recv(4096)
                connection.close()

    threading.Thread(target=close_each, daemon=True).start()
    url = f"http://127.0.0.1:{listener.getsockname()[1]}"
    try:
        with pytest.raises(KubeconfigError) as raised:
            check(
                "current-context: a\ncontexts:\n- {name: a, context: {cluster: a, user: u}}\n"
                f"users:\n- {{name: u, user: {{token: t}}}}\nclusters:\n- {{name: a, cluster: {{server: '{url}'}}}}\n"
            )
    finally:
        listener.close()
    assert raised.value.key == KUBECONFIG_KEY
    assert raised.value.problem == (
        f"the API server {url} (context 'a') cannot be reached: Remote end closed connection without response"
    )


def test_a_localhost_server_is_not_reached_through_the_environment_s_proxy(
    server: FakeApiServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    dead_proxy = f"http://127.0.0.1:{free_port()}"
    for variable in ("HTTPS_PROXY", "https_proxy"):
        monkeypatch.setenv(variable, dead_proxy)
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    cluster = {
        "server": server.url.replace("127.0.0.1", "localhost"),
        "certificate-authority-data": server.certs.data("ca.crt"),
    }
    assert check(server.kubeconfig(cluster=cluster)) == GIT_VERSION


def test_an_https_proxy_url_is_supported(server: FakeApiServer) -> None:
    """An https:// proxy-url is used (here one that is down: the check cannot reach the server through it)."""
    dead_proxy = f"https://127.0.0.1:{free_port()}"
    cluster = {
        "server": server.url,
        "certificate-authority-data": server.certs.data("ca.crt"),
        "proxy-url": dead_proxy,
    }
    with pytest.raises(KubeconfigError, match=r"cannot be reached: \[Errno 111\] Connection refused"):
        check(server.kubeconfig(cluster=cluster))
    assert server.requests == []


def test_a_list_is_not_a_kubeconfig() -> None:
    with pytest.raises(KubeconfigError) as raised:
        parse("- just\n- a list\n")
    assert raised.value.problem == "is not a kubeconfig: a YAML mapping with clusters, contexts and users"


def test_a_user_name_without_a_password_is_sent_with_an_empty_one(server: FakeApiServer) -> None:
    """As client-go sends it: `name:` (the fake server knows that user with an empty password)."""
    assert check(server.kubeconfig(user={"username": NO_PASSWORD_USERNAME})) == GIT_VERSION
    assert server.requests == [("/version", "basic")]


def test_a_version_without_git_version_is_an_empty_version() -> None:
    with fake_api_server(git_version=None) as server:
        assert check(server.kubeconfig()) == ""


# A relative file reference of each kind, alone: the kubeconfig file is not handed to the provider (its path
# stays ""), since pulumi-kubernetes would not resolve it against the file.
RELATIVE_REFERENCES = [
    ({"certificate-authority": "pki/ca.crt"}, None),  # a cluster's file
    (None, {"client-certificate": "pki/client.crt", "client-key": "pki/client.key"}),  # a user's files
    (None, {"tokenFile": "token"}),
]


@pytest.mark.parametrize(("cluster", "user"), RELATIVE_REFERENCES)
def test_any_one_relative_reference_keeps_the_inlined_copy_instead_of_the_path(
    server: FakeApiServer, tmp_path: Path, cluster: dict[str, str] | None, user: dict[str, str] | None
) -> None:
    client_files(server, tmp_path)
    kubeconfig = tmp_path / "config"
    ca = {"certificate-authority-data": server.certs.data("ca.crt")}
    kubeconfig.write_text(server.kubeconfig(cluster={"server": server.url, **(cluster or ca)}, user=user))
    assert read_kubeconfig(secret=None, path=str(kubeconfig), context="").path == ""
    # The same references made absolute: the file itself is read again by every run.
    absolute = {key: str(tmp_path / value) for key, value in {**(cluster or {}), **(user or {})}.items()}
    kubeconfig.write_text(
        server.kubeconfig(
            cluster={"server": server.url, **({k: absolute[k] for k in cluster} if cluster else ca)},
            user={k: absolute[k] for k in user} if user else None,
        )
    )
    assert read_kubeconfig(secret=None, path=str(kubeconfig), context="").path == str(kubeconfig)


def test_an_error_names_the_server_without_its_trailing_slash() -> None:
    """The server as the kubeconfig writes it, less the trailing slash: Rancher's proxy path stays whole."""
    with fake_api_server(status=500) as server:
        base = f"{server.url}/k8s/clusters/c-m-X9ZX"
        ca = server.certs.data("ca.crt")
        with pytest.raises(KubeconfigError) as raised:
            check(server.kubeconfig(cluster={"server": base + "/", "certificate-authority-data": ca}))
    assert (
        raised.value.problem == f"the API server {base} (context 'fake') answers GET /version with HTTP 500"
    )


JOBSET_CRD = "jobsets.jobset.x-k8s.io"


def test_a_custom_resource_definition_is_read_or_none_when_absent() -> None:
    crd = {"kind": "CustomResourceDefinition", "metadata": {"name": JOBSET_CRD}}
    with fake_api_server(objects={JOBSET_CRD_PATH: crd}) as server:
        cluster = parse_kubeconfig(server.kubeconfig(), key=KUBECONFIG_KEY, context="", base_dir=None)
        assert read_custom_resource_definition(cluster, JOBSET_CRD) == crd
        assert read_custom_resource_definition(cluster, "trainjobs.trainer.kubeflow.org") is None  # 404
    assert server.requests == [
        (JOBSET_CRD_PATH, "token"),
        ("/apis/apiextensions.k8s.io/v1/customresourcedefinitions/trainjobs.trainer.kubeflow.org", "token"),
    ]
    with fake_api_server(objects={JOBSET_CRD_PATH: ["not", "a", "crd"]}) as server:
        cluster = parse_kubeconfig(server.kubeconfig(), key=KUBECONFIG_KEY, context="", base_dir=None)
        assert read_custom_resource_definition(cluster, JOBSET_CRD) is None  # JSON, but no object


def test_a_custom_resource_definition_that_is_not_json_stops_the_check(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A 200 whose body is no JSON (a proxy's page, say) is one line naming the kubeconfig key."""
    monkeypatch.setattr("components.cluster.kubeconfig.api_get", lambda *args: (200, b"<html>proxy</html>"))
    text = (
        "current-context: a\ncontexts:\n- {name: a, context: {cluster: a, user: u}}\nusers:\n- {name: u, user: {}}\n"
        "clusters:\n- {name: a, cluster: {server: 'https://192.0.2.1:6443/'}}\n"
    )
    cluster = parse_kubeconfig(text, key=KUBECONFIG_PATH_KEY, context="", base_dir=None)
    with pytest.raises(KubeconfigError) as raised:
        read_custom_resource_definition(cluster, JOBSET_CRD)
    assert raised.value.key == KUBECONFIG_PATH_KEY
    assert raised.value.problem == (
        f"the API server https://192.0.2.1:6443 (context 'a') answers GET {JOBSET_CRD_PATH} with no JSON"
    )


# with_namespace: (kubeconfig, what it becomes). Only the current context gets the namespace; anything else
# (no current-context, no such context, not a mapping) is returned as it is, text unchanged.
WITH_NAMESPACE = [
    (
        {"current-context": "b", "contexts": [{"name": "a", "context": {}}, {"name": "b", "context": {}}]},
        {
            "current-context": "b",
            "contexts": [{"name": "a", "context": {}}, {"name": "b", "context": {"namespace": "trainstack"}}],
        },
    ),
    (  # a context without its mapping gets one
        {"current-context": "b", "contexts": [{"name": "b"}]},
        {"current-context": "b", "contexts": [{"name": "b", "context": {"namespace": "trainstack"}}]},
    ),
    (  # the namespace replaced; kubectl's key order kept
        {
            "kind": "Config",
            "current-context": "b",
            "contexts": [{"name": "b", "context": {"user": "u", "namespace": "default", "cluster": "c"}}],
        },
        {
            "kind": "Config",
            "current-context": "b",
            "contexts": [{"name": "b", "context": {"user": "u", "namespace": "trainstack", "cluster": "c"}}],
        },
    ),
    ({"contexts": [{"context": {}}]}, None),  # no current-context: nothing to set
    ({"current-context": "gone", "contexts": [{"name": "a", "context": {}}]}, None),
    (["a", "list"], None),
    ({"clusters": []}, None),
]


@pytest.mark.parametrize(("document", "expected"), WITH_NAMESPACE)
def test_with_namespace_sets_the_current_context_s_namespace_only(document: Any, expected: Any) -> None:
    text = yaml.safe_dump(document, sort_keys=False)
    result = with_namespace(text, "trainstack")
    if expected is None:
        assert result == text
    else:
        assert result == yaml.safe_dump(expected, sort_keys=False)
