"""A cluster the user already has (its kubeconfig checked by kubeconfig.py): no node is created."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import pulumi

from components.cluster.kubeconfig import api_get
from components.cluster.provider import ClusterProvider, ExistingCluster, Provisioned
from components.shell import KubeconfigFile


@dataclass
class Existing(ClusterProvider):
    """Creates: nothing; with kubeconfigPath the file is read at every run (destroy uses its current
    credentials). Node identity: none (the cluster pulls the image). Shared storage: none (a multi-node job
    names a ReadWriteMany checkpointStorageClass). Teardown: nothing of the cluster, only what was installed."""

    shared_storage = None
    cluster: ExistingCluster

    def provision(self, name: str, parent: pulumi.Resource) -> Provisioned:
        cluster = self.cluster
        file = KubeconfigFile(cluster.path, cluster.context) if cluster.path else None
        return Provisioned(
            nodes=[], kubeconfig=pulumi.Output.from_input(cluster.kubeconfig), kubeconfig_file=file
        )


def ask_api(cluster: ExistingCluster, paths: Mapping[str, str]) -> dict[str, tuple[int, Any]]:
    """Each path's (HTTP status, JSON body or {}); KubeconfigError when the server cannot be reached."""
    answers: dict[str, tuple[int, Any]] = {}
    for key, path in paths.items():
        status, body = api_get(cluster, path)
        try:
            document = json.loads(body) if body else {}
        except ValueError:
            document = {}
        answers[key] = (status, document if isinstance(document, dict) else {})
    return answers
