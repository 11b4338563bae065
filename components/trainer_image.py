"""The trainer image: built from the Dockerfile, tagged by content, pushed (and pre-pulled) or loaded into the
nodes; only the delivery waits for the cluster. upstream: pulumi/pulumi-docker provider/image.go @ v5.1.0"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import pulumi
import pulumi_docker as docker
import pulumi_kubernetes as k8s
from pulumi_command import local

from components.settings import REPO_ROOT, Values, error
from components.shell import BASH, script

# What goes into the image, hence into its tag: a change to any of these rolls the job out.
IMAGE_INPUT_FILES = ("Dockerfile", ".dockerignore")
IMAGE_INPUT_TREES = ("trainer",)
# A CPU stack's image: plain Python and PyTorch's CPU wheels (about 1 GB) instead of the CUDA base (about 8 GB).
CPU_BUILD_ARGS = {
    "BASE_IMAGE": "python:3.12-slim-bookworm",
    "TORCH_INDEX_URL": "https://download.pytorch.org/whl/cpu",
}
_BUILD_ARG = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")


class SshHosts(Protocol):
    """Remote nodes reached over SSH (the cluster's RemoteHosts)."""

    @property
    def user(self) -> str: ...
    @property
    def port(self) -> int: ...
    @property
    def private_key_path(self) -> Path: ...
    @property
    def all(self) -> tuple[str, ...]: ...


class Registry(Protocol):
    """A registry login (Access's RegistryCredentials)."""

    @property
    def server(self) -> str: ...
    @property
    def username(self) -> str: ...
    @property
    def password(self) -> pulumi.Input[str]: ...


@dataclass(frozen=True)
class KindLoad:
    """`kind load image-archive` (works with Docker's containerd image store too)."""

    cluster_name: str


@dataclass(frozen=True)
class K3sImport:
    """`docker save | k3s ctr images import -` on every node."""

    hosts: SshHosts | None  # remote nodes over SSH; None: the k3s on this machine


@dataclass(frozen=True)
class DockerNodesImport:
    """Into every container node (labelled `label`=cluster_name) of a k3s-in-Docker cluster."""

    cluster_name: str
    label: str


Delivery = KindLoad | K3sImport | DockerNodesImport

# The pre-pull DaemonSet's pods (tests/e2e/timing.py finds them by these).
PREPULL_LABELS = {
    "app.kubernetes.io/part-of": "trainstack",
    "app.kubernetes.io/component": "trainer-image-prepull",
}
# Only holds the image on the node: the kubelet's image GC leaves images in use.
PREPULL_COMMAND = ["sleep", "infinity"]


@dataclass(frozen=True)
class PrePull:
    """Where a pushed image is pulled ahead of the job."""

    job_name: str  # the pre-pull pods' app.kubernetes.io/instance (stacks may share a namespace)
    namespace: pulumi.Input[str]
    image_pull_secret: pulumi.Input[str] | None
    provider: k8s.Provider
    uid: int  # the training pods' user, and below their tolerations (the GPU nodes' taint)
    tolerations: Sequence[Mapping[str, str]] = ()


@dataclass(frozen=True)
class TrainerImageArgs:
    repository: str  # e.g. trainstack/trainer or ghcr.io/acme/trainer
    context: Path  # the repository root (holds the Dockerfile)
    platform: str  # e.g. linux/amd64
    push: bool  # to the repository's registry (then the cluster pulls it by digest)
    registry: Registry | None  # login for the push; None: the Docker CLI's own
    delivery: Delivery | None  # how an unpushed image reaches the nodes; None when pushing
    build_args: Mapping[str, str] = field(default_factory=dict)  # Dockerfile build arguments


def image_input_paths(context: Path) -> Iterator[Path]:
    for name in IMAGE_INPUT_FILES:
        if (context / name).is_file():
            yield context / name
    for tree in IMAGE_INPUT_TREES:
        for path in (context / tree).rglob("*"):
            if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".pyc":
                yield path


def content_tag(context: Path, platform: str = "", build_args: Mapping[str, str] | None = None) -> str:
    """Changes exactly when the image would: a hash of its files, the platform and the build arguments."""
    digest = hashlib.sha256()
    for path in sorted(image_input_paths(context)):
        digest.update(path.relative_to(context).as_posix().encode() + b"\0")
        digest.update(path.read_bytes() + b"\0")
    digest.update(f"platform={platform}\0".encode())
    for key, value in sorted((build_args or {}).items()):
        digest.update(f"arg:{key}={value}\0".encode())
    return digest.hexdigest()[:16]


def _build_args(values: Values, gpus_per_node: int) -> dict[str, str]:
    """imageBuildArgs and baseImage (BASE_IMAGE); a CPU stack naming no base gets CPU_BUILD_ARGS."""
    build_args = {}
    for item in values["imageBuildArgs"]:
        if not _BUILD_ARG.match(item):
            raise error("imageBuildArgs", f"must be a list of NAME=value build arguments, got {item!r}")
        name, _, value = item.partition("=")
        build_args[name] = value
    if values["baseImage"]:
        if "BASE_IMAGE" in build_args:
            raise error("baseImage", "and BASE_IMAGE in imageBuildArgs may not both be set")
        build_args["BASE_IMAGE"] = str(values["baseImage"])
    if not gpus_per_node and "BASE_IMAGE" not in build_args:
        build_args = {**CPU_BUILD_ARGS, **build_args}
    return build_args


def image_args(
    values: Values, *, registry: Registry | None, gpus_per_node: int, delivery: Delivery | None
) -> TrainerImageArgs:
    """delivery: how the cluster takes an unpushed image; None: it cannot (an existing cluster)."""
    push = bool(values["imagePush"])
    if delivery is None and not push:
        raise error(
            "imagePush",
            "must be true when clusterKind is existing: the cluster pulls the image from imageRepository"
            " (the stack loads images only into nodes it created), got false",
        )
    repository = str(values["imageRepository"])
    if push and not {".", ":"} & set(repository.split("/")[0]):
        raise error(
            "imageRepository",
            f"must start with a registry host (e.g. ghcr.io/acme/trainer) when imagePush is true, got {repository!r}",
        )
    return TrainerImageArgs(
        repository=repository,
        context=REPO_ROOT,
        platform=str(values["imagePlatform"]),
        push=push,
        registry=registry,
        delivery=None if push else delivery,
        build_args=_build_args(values, gpus_per_node),
    )


UNTAG_SCRIPT = script("trainer_image_untag.sh")
REGISTRY_DELETE_SCRIPT = script("trainer_image_registry_delete.sh")
KIND_LOAD_SCRIPT = script("trainer_image_archive.sh", "trainer_image_kind_load.sh")
DOCKER_NODES_IMPORT_SCRIPT = script("trainer_image_archive.sh", "trainer_image_docker_nodes_import.sh")
K3S_IMPORT_SCRIPT = script("trainer_image_k3s_import.sh")
K3S_NODE_IMPORT_SCRIPT = script("root.sh", "trainer_image_k3s_node_import.sh")


def delivery_commands(delivery: Delivery | None) -> list[tuple[str, str, dict[str, str]]]:
    """What brings an unpushed image into the nodes: (name suffix, script, environment) per command."""
    if isinstance(delivery, KindLoad):
        return [("kind-load", KIND_LOAD_SCRIPT, {"KIND_CLUSTER": delivery.cluster_name})]
    if isinstance(delivery, DockerNodesImport):
        labels = {"CLUSTER_LABEL": delivery.label, "CLUSTER": delivery.cluster_name}
        return [("node-import", DOCKER_NODES_IMPORT_SCRIPT, labels)]
    if isinstance(delivery, K3sImport) and delivery.hosts is None:
        return [("k3s-import", K3S_IMPORT_SCRIPT, {"NODE_IMPORT": K3S_NODE_IMPORT_SCRIPT})]
    if isinstance(delivery, K3sImport) and delivery.hosts is not None:
        hosts = delivery.hosts
        login = {
            "NODE_IMPORT": K3S_NODE_IMPORT_SCRIPT,
            "SSH_USER": hosts.user,
            "SSH_PORT": str(hosts.port),
            "SSH_KEY": str(hosts.private_key_path),
        }
        return [
            (f"k3s-import-{i}", K3S_IMPORT_SCRIPT, {**login, "SSH_HOST": host})
            for i, host in enumerate(hosts.all)
        ]
    return []


class TrainerImage(pulumi.ComponentResource):
    # What the TrainJob runs: the registry digest when pushed, else the content tag; pinned: tag@image ID.
    reference: pulumi.Output[str]
    pinned: pulumi.Output[str]

    def __init__(
        self,
        name: str,
        args: TrainerImageArgs,
        *,
        cluster_identity: pulumi.Input[str] = "",
        deliver_after: Sequence[pulumi.Resource] = (),
        prepull: PrePull | None = None,
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        """cluster_identity: changes with a new cluster (which needs the image again); deliver_after: what the
        delivery waits for; prepull: where a pushed image is pulled ahead of the job (None: not)."""
        super().__init__("trainstack:index:TrainerImage", name, None, opts)
        image_name = f"{args.repository}:{content_tag(args.context, args.platform, args.build_args)}"
        registry = None
        login: dict[str, pulumi.Input[str]] = {}  # for the registry delete
        if args.push and args.registry is not None:
            # The password stays a secret in the state, never on a command line or in a file.
            password = pulumi.Output.secret(args.registry.password)
            registry = docker.RegistryArgs(
                server=args.registry.server, username=args.registry.username, password=password
            )
            login = {"REGISTRY_USERNAME": args.registry.username, "REGISTRY_PASSWORD": password}
        image = docker.Image(
            name,
            image_name=image_name,
            build=docker.DockerBuildArgs(
                context=str(args.context),
                dockerfile=str(args.context / "Dockerfile"),
                platform=args.platform,
                args=dict(args.build_args),
                builder_version=docker.BuilderVersion.BUILDER_BUILD_KIT,
            ),
            skip_push=not args.push,
            registry=registry,
            opts=pulumi.ResourceOptions(parent=self),
        )
        # pulumi-docker's delete leaves the local image: this removes the tag (on destroy or a new tag).
        local.Command(
            f"{name}-untag",
            delete=UNTAG_SCRIPT,
            interpreter=BASH,
            environment={"IMAGE": image_name},
            triggers=[image_name],
            opts=pulumi.ResourceOptions(parent=self, depends_on=[image]),
        )
        digest = image.repo_digest
        if args.push:
            self.reference = self.pinned = digest
            # pulumi-docker never deletes what it pushed: this does, once a new image replaced it (or on destroy).
            local.Command(
                f"{name}-registry-delete",
                delete=REGISTRY_DELETE_SCRIPT,
                interpreter=BASH,
                environment={"IMAGE_DIGEST": digest, **login},
                triggers=[digest],
                opts=pulumi.ResourceOptions(parent=self, depends_on=[image]),
            )
        else:
            # Unpushed, the digest is the local image ID: not pullable, but it pins what was loaded.
            self.reference = digest.apply(lambda _: image_name)
            self.pinned = digest.apply(lambda image_id: f"{image_name}@{image_id}")
        for suffix, script_text, environment in delivery_commands(args.delivery):
            local.Command(
                f"{name}-{suffix}",
                create=script_text,
                interpreter=BASH,
                environment={"IMAGE": image_name, **environment},
                triggers=[digest, cluster_identity],  # a new cluster has no images
                opts=pulumi.ResourceOptions(parent=self, depends_on=[image, *deliver_after]),
            )
        if args.push and prepull is not None:
            self._prepull(name, prepull)
        self.register_outputs({"image": self.pinned})

    def _prepull(self, name: str, prepull: PrePull) -> None:
        """Pods pulling the pushed image on every node the job may use; `up` does not wait (skipAwait)."""

        pod: dict[str, Any] = {
            "automountServiceAccountToken": False,
            "terminationGracePeriodSeconds": 0,
            "securityContext": {
                "runAsNonRoot": True,
                "runAsUser": prepull.uid,
                "runAsGroup": prepull.uid,
                "seccompProfile": {"type": "RuntimeDefault"},
            },
            "containers": [
                {
                    "name": "pull",
                    "image": self.reference,
                    "command": PREPULL_COMMAND,
                    "resources": {"requests": {"cpu": "1m", "memory": "8Mi"}, "limits": {"memory": "16Mi"}},
                    "securityContext": {
                        "allowPrivilegeEscalation": False,
                        "capabilities": {"drop": ["ALL"]},
                        "readOnlyRootFilesystem": True,
                    },
                }
            ],
        }
        if prepull.image_pull_secret is not None:
            pod["imagePullSecrets"] = [{"name": prepull.image_pull_secret}]
        labels = {**PREPULL_LABELS, "app.kubernetes.io/instance": prepull.job_name}
        if prepull.tolerations:
            pod["tolerations"] = list(prepull.tolerations)
        metadata: Any = {  # the SDK's TypedDicts do not take a plain dict
            "namespace": prepull.namespace,
            "labels": labels,
            "annotations": {"pulumi.com/skipAwait": "true"},
        }
        spec: Any = {
            "selector": {"matchLabels": labels},
            "updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": "100%"}},
            "template": {"metadata": {"labels": labels}, "spec": pod},
        }
        k8s.apps.v1.DaemonSet(
            f"{name}-prepull",
            metadata=metadata,
            spec=spec,
            opts=pulumi.ResourceOptions(parent=self, provider=prepull.provider),
        )
