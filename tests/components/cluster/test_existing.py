"""The existing kind: nothing created, the provider on the user's (reduced) kubeconfig, no node identity."""

from __future__ import annotations

from pathlib import Path

import pulumi
import pytest

from components.cluster import Cluster
from components.cluster.existing import ask_api
from components.cluster.kubeconfig import KUBECONFIG_KEY, parse_kubeconfig, read_kubeconfig
from components.cluster.provider import ClusterArgs, ExistingCluster
from components.shell import kubectl_command
from tests.support.fake_apiserver import fake_api_server
from tests.support.shell_stubs import run_text, stub_tools
from tests.support.stack_helpers import FAKE_KUBECONFIG, contains_secret, evaluate, reveal


def test_an_existing_cluster_creates_nothing_and_its_provider_uses_the_kubeconfig() -> None:
    existing = ExistingCluster(kubeconfig=FAKE_KUBECONFIG, context="default", source_key="kubeconfigPath")

    def program() -> None:
        cluster = Cluster("c", ClusterArgs("existing", "demo", 2, 0, "", "", existing=existing))
        pulumi.export("kubeconfig", cluster.kubeconfig)
        pulumi.export("identity", cluster.identity)

    run = evaluate(program)
    assert [r.type for r in run.resources] == ["trainstack:index:Cluster", "pulumi:providers:kubernetes"]
    provider = run.one("pulumi:providers:kubernetes")
    assert (
        contains_secret(provider.inputs["kubeconfig"])
        and reveal(provider.inputs["kubeconfig"]) == FAKE_KUBECONFIG
    )
    assert provider.dependencies == []
    assert contains_secret(run.outputs["kubeconfig"])
    assert run.outputs["identity"] == ""  # no node to deliver an image into


def test_destroy_uses_the_credentials_the_kubeconfig_file_holds_then(tmp_path: Path) -> None:
    """Issue 23, case 9: `pulumi destroy` runs no program; the provider and every command's delete use the
    inputs the state kept at the last `up`. With kubeconfigPath those are the file's path and the context, so a
    token rotated in the file since is the one used: pulumi-kubernetes reads a path when it starts (its
    pinned SDK: "The contents of a kubeconfig file or the path to a kubeconfig file"), and kubeconfig.sh reads
    the file when the command runs."""
    import pulumi_kubernetes

    sdk = Path(pulumi_kubernetes.__file__).parent / "provider.py"
    assert "The contents of a kubeconfig file or the path to a kubeconfig file." in sdk.read_text()
    config = tmp_path / "kubeconfig"
    config.write_text(FAKE_KUBECONFIG)
    existing = read_kubeconfig(secret=None, path=str(config), context="")

    def program() -> None:
        cluster = Cluster("c", ClusterArgs("existing", "demo", 1, 0, "", "", existing=existing))
        kubectl_command(
            "crds",
            kubeconfig=cluster.kubectl_kubeconfig,
            script="kubectl get crd\n",
            delete='kubectl delete crd x\ncp "$KUBECONFIG" "$HOME/used"\n',
            opts=pulumi.ResourceOptions(provider=cluster.provider),
        )

    run = evaluate(program)
    provider = run.one("pulumi:providers:kubernetes")
    assert (provider.inputs["kubeconfig"], provider.inputs["context"]) == (str(config), existing.context)
    command = run.one("command:local:Command", "crds")
    state_environment = reveal(command.inputs["environment"])  # what destroy will run the delete with
    assert FAKE_KUBECONFIG not in repr(state_environment)
    rotated = FAKE_KUBECONFIG.replace("fake-token", "rotated-token")
    assert rotated != FAKE_KUBECONFIG
    config.write_text(rotated)  # the credentials rotate after the last `up`
    # kubectl config view --raw --minify --flatten, reduced to what it prints for a one-context file.
    environment, log = stub_tools(tmp_path, {"kubectl": 'case "$1" in config) cat "$KUBECONFIG" ;; esac'})
    result = run_text(command.inputs["delete"], {**environment, **state_environment})
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "used").read_text() == rotated
    assert (tmp_path / "used").stat().st_mode & 0o077 == 0  # private, like the file it copies
    context = existing.context
    assert (
        log.read_text().splitlines()[0] == f"kubectl config view --raw --minify --flatten --context {context}"
    )


def test_the_api_is_asked_each_path_and_answers_its_status_and_json_object() -> None:
    nodes = {"kind": "NodeList", "items": [{"metadata": {"name": "gpu-1"}}]}
    paths = {"nodes": "/api/v1/nodes", "classes": "/apis/node.k8s.io/v1/runtimeclasses", "list": "/x/list"}
    with fake_api_server(objects={"/api/v1/nodes": nodes, "/x/list": [1, 2]}) as server:
        cluster = parse_kubeconfig(server.kubeconfig(), key=KUBECONFIG_KEY, context="", base_dir=None)
        answers = ask_api(cluster, paths)
    assert answers == {
        "nodes": (200, nodes),
        "classes": (404, {}),  # an error status: its body is not read (api_get)
        "list": (200, {}),  # JSON, but not an object
    }
    assert server.requests == [(path, "token") for path in paths.values()]


@pytest.mark.parametrize(
    ("body", "document"), [(b"", {}), (b"<html>proxy</html>", {}), (b'"text"', {}), (b'{"a": 1}', {"a": 1})]
)
def test_an_answer_that_is_no_json_object_is_an_empty_one(
    monkeypatch: pytest.MonkeyPatch, body: bytes, document: dict[str, int]
) -> None:
    monkeypatch.setattr("components.cluster.existing.api_get", lambda cluster, path: (503, body))
    existing = ExistingCluster(kubeconfig=FAKE_KUBECONFIG, context="default", source_key="kubeconfigPath")
    assert ask_api(existing, {"version": "/version"}) == {"version": (503, document)}
