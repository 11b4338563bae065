"""A cluster the user already has: the stack creates no node and installs the rest onto it.

The kubeconfig comes from the stack's config (the `kubeconfig` secret or `kubeconfigPath`, and `kubeContext`),
read, reduced and checked against the API server by kubeconfig.py before anything is declared.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import pulumi

from components.cluster.kubeconfig import api_get
from components.cluster.provider import ClusterArgs, ClusterProvider, ExistingCluster, Provisioned
from components.shell import KubeconfigFile


class Existing(ClusterProvider):
    """Creates: nothing. Kubeconfig: the user's, reduced to one context with its certificate files inline.
    With kubeconfigPath the Kubernetes provider and the kubectl commands get the file's path and the context
    instead, and read the file whenever they run: `pulumi destroy` (which does not run the program) then uses
    the credentials the file holds at that time, not the ones of the last `up`.
    Node identity: none, as nothing is delivered into nodes the stack did not make: the cluster pulls the
    image from imageRepository (imagePush). Shared storage: none of its own; a multi-node job needs the
    ReadWriteMany class the user names in checkpointStorageClass. Teardown: nothing of the cluster (destroy
    removes only what the stack installed onto it).
    """

    shared_storage = None

    def __init__(self, args: ClusterArgs, cluster: ExistingCluster) -> None:
        super().__init__(args)
        self.cluster = cluster

    def provision(self, name: str, parent: pulumi.Resource) -> Provisioned:
        cluster = self.cluster
        # kubeconfigPath: the file is read at every run, destroy included, so rotated credentials are used.
        file = KubeconfigFile(cluster.path, cluster.context) if cluster.path else None
        return Provisioned(
            nodes=[], kubeconfig=pulumi.Output.from_input(cluster.kubeconfig), kubeconfig_file=file
        )


def ask_api(cluster: ExistingCluster, paths: Mapping[str, str]) -> dict[str, tuple[int, Any]]:
    """Each path's HTTP status and JSON body (an empty mapping when the answer has none) from the cluster's API
    server, as the kubeconfig's user. Raises KubeconfigError when the server cannot be reached."""
    answers: dict[str, tuple[int, Any]] = {}
    for key, path in paths.items():
        status, body = api_get(cluster, path)
        try:
            document = json.loads(body) if body else {}
        except ValueError:
            document = {}
        answers[key] = (status, document if isinstance(document, dict) else {})
    return answers
