"""k3s in Docker: a server and agent containers of the rancher/k3s image on this machine, as k3d makes them."""

from __future__ import annotations

from dataclasses import dataclass

import pulumi

from components.cluster.k3s import k3s_server_flags
from components.cluster.provider import (
    SHARED_STORAGE_PATH,
    ClusterProvider,
    DockerNodes,
    Provisioned,
)
from components.cluster.scripts import cluster_script, kubeconfig_command, shared_storage

# On every Docker object of a k3s-in-Docker cluster, so that destroy finds them all.
DOCKER_CLUSTER_LABEL = "dev.trainstack.cluster"
CREATE_SCRIPT = cluster_script("k3s_docker_lib.sh", "k3s_docker_create.sh")
DELETE_SCRIPT = cluster_script("k3s_docker_lib.sh", "k3s_docker_delete.sh")
SHARED_CREATE_SCRIPT = cluster_script("k3s_docker_shared_create.sh")
SHARED_DELETE_SCRIPT = cluster_script("k3s_docker_shared_delete.sh")


@dataclass
class K3sDocker(ClusterProvider):
    """Creates: one `local.Command` running k3s_docker_create.sh (network, privileged server and agent
    containers; stdout the kubeconfig on a pinned loopback port). Node identity: that command. Shared storage:
    a Docker volume made and removed by a command with no triggers, so a resize (old `delete` first) keeps
    the checkpoints. upstream: pulumi/pulumi-command provider/pkg/provider/common/inputs.go @ v1.2.1
    Teardown: every labelled container, volume and network, then the shared volume."""

    shared_storage = "the Docker volume <clusterName>-shared, mounted into every node container"
    docker: DockerNodes

    def provision(self, name: str, parent: pulumi.Resource) -> Provisioned:
        args, docker = self.args, self.docker
        environment = {
            "CLUSTER": args.name,
            "NODE_IMAGE": docker.image,
            "SHARED": str(int(args.shared_storage)),
            "LABEL": f"{DOCKER_CLUSTER_LABEL}={args.name}",
            "NODE_COUNT": str(args.node_count),
            "K3S_FLAGS": " ".join(k3s_server_flags("127.0.0.1")),
            "SHARED_STORAGE_PATH": SHARED_STORAGE_PATH,
        }
        if docker.airgap_images is not None:
            environment["AIRGAP_IMAGES"] = str(docker.airgap_images)
        volume = {key: environment[key] for key in ("CLUSTER", "LABEL", "NODE_IMAGE")}
        shared = shared_storage(
            f"{name}-k3s-docker-shared", parent, args, SHARED_CREATE_SCRIPT, SHARED_DELETE_SCRIPT, volume
        )
        # Any change to the nodes is a new cluster: the old one goes first.
        triggers = [
            args.name,
            args.node_count,
            docker.image,
            environment.get("AIRGAP_IMAGES", ""),
            args.shared_storage,
            args.k3s_version,
        ]
        return kubeconfig_command(
            f"{name}-k3s-docker",
            parent,
            shared,
            triggers,
            create=CREATE_SCRIPT,
            delete=DELETE_SCRIPT,
            environment=environment,
        )
