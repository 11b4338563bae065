"""The existing kind: nothing created, the provider on the user's (reduced) kubeconfig, no node identity."""

from __future__ import annotations

import pulumi

from components.cluster import Cluster, ClusterArgs, ExistingCluster
from tests.stack_helpers import FAKE_KUBECONFIG, contains_secret, evaluate, reveal


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
