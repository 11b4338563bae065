"""The trainer image: built from the repository's Dockerfile, tagged by content, delivered to the cluster."""

from __future__ import annotations

import hashlib
import shlex
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pulumi
import pulumi_docker as docker
from pulumi_command import local

from components.access import RegistryCredentials
from components.cluster import RemoteHosts
from components.shell import BASH, as_root

# What goes into the image, hence into its tag: a change to any of these rolls the job out.
IMAGE_INPUT_FILES = ("Dockerfile", ".dockerignore")
IMAGE_INPUT_TREES = ("trainer",)
# containerd namespace the kubelet's images live in.
K3S_IMAGE_IMPORT = as_root("k3s ctr -n k8s.io images import -")


@dataclass(frozen=True)
class KindLoad:
    """Deliver the image with `kind load docker-image`."""

    # The kind cluster.
    cluster_name: str


@dataclass(frozen=True)
class K3sImport:
    """Deliver the image with `docker save | k3s ctr images import -` on every node."""

    # Remote nodes, reached over SSH; None imports into the k3s on this machine.
    hosts: RemoteHosts | None


@dataclass(frozen=True)
class TrainerImageArgs:
    """How to build and deliver the trainer image."""

    # Image repository, e.g. trainstack/trainer or ghcr.io/acme/trainer.
    repository: str
    # Build context, the repository root (holds the Dockerfile).
    context: Path
    # Build platform, e.g. linux/amd64.
    platform: str
    # BASE_IMAGE build argument; empty keeps the Dockerfile's default.
    base_image: str
    # Push to the repository's registry (then the cluster pulls it by digest).
    push: bool
    # Login for the push; None for a registry that needs none.
    registry: RegistryCredentials | None
    # How an unpushed image reaches the nodes; None when pushing.
    delivery: KindLoad | K3sImport | None


def image_input_paths(context: Path) -> Iterator[Path]:
    """The files whose content defines the image (bytecode caches excluded)."""
    for name in IMAGE_INPUT_FILES:
        if (context / name).is_file():
            yield context / name
    for tree in IMAGE_INPUT_TREES:
        for path in (context / tree).rglob("*"):
            if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".pyc":
                yield path


def content_tag(context: Path) -> str:
    """A tag that changes exactly when a file of the image changes: a hash of names and contents."""
    digest = hashlib.sha256()
    for path in sorted(image_input_paths(context)):
        digest.update(path.relative_to(context).as_posix().encode() + b"\0")
        digest.update(path.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


def ssh_import_script(hosts: RemoteHosts, host: str) -> str:
    """Streams the local image $IMAGE into one remote node's containerd over SSH."""
    ssh = shlex.join(
        [
            "ssh",
            "-o",
            "BatchMode=yes",
            "-o",
            "StrictHostKeyChecking=accept-new",
            "-i",
            str(hosts.private_key_path),
            "-p",
            str(hosts.port),
            f"{hosts.user}@{host}",
        ]
    )
    return f"set -euo pipefail\ndocker save \"$IMAGE\" | {ssh} '{K3S_IMAGE_IMPORT}'\n"


class TrainerImage(pulumi.ComponentResource):
    """The built image and the commands that put it on the nodes."""

    # What the TrainJob runs: the registry digest when pushed, else the content-addressed tag.
    reference: pulumi.Output[str]
    # The reference pinned to a digest: the registry digest, or tag@local image ID when not pushed.
    pinned: pulumi.Output[str]
    # Commands that put an unpushed image on the nodes; depending on this component waits for them.
    deliveries: list[local.Command]

    def __init__(self, name: str, args: TrainerImageArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("trainstack:index:TrainerImage", name, None, opts)
        build: docker.DockerBuildArgsDict = {
            "context": str(args.context),
            "dockerfile": str(args.context / "Dockerfile"),
            "platform": args.platform,
        }
        if args.base_image:
            build["args"] = {"BASE_IMAGE": args.base_image}
        registry: docker.RegistryArgsDict | None = None
        if args.push and args.registry is not None:
            registry = {
                "server": args.registry.server,
                "username": args.registry.username,
                "password": args.registry.password,
            }
        image = docker.Image(
            name,
            image_name=f"{args.repository}:{content_tag(args.context)}",
            build=build,
            skip_push=not args.push,
            registry=registry,
            opts=pulumi.ResourceOptions(parent=self),
        )
        if args.push:
            self.reference = image.repo_digest
            self.pinned = image.repo_digest
        else:
            # Unpushed, repo_digest is the local image ID: not pullable, but it pins what was loaded.
            self.reference = image.image_name
            self.pinned = pulumi.Output.concat(image.image_name, "@", image.repo_digest)
        self.deliveries = self._deliver(name, args.delivery, image)
        # pulumi_docker leaves what it built in the local engine: this removes the tag on `pulumi destroy`,
        # and the previous tag once a new build replaces it, so that nothing is left behind.
        local.Command(
            f"{name}-local-cleanup",
            create="true",
            delete='docker image rm --force "$IMAGE" >/dev/null 2>&1 || true',
            interpreter=BASH,
            environment={"IMAGE": image.image_name},
            triggers=[image.image_name],
            opts=pulumi.ResourceOptions(parent=self, depends_on=[image]),
        )
        self.register_outputs({"image": self.pinned})

    def _deliver(
        self, name: str, delivery: KindLoad | K3sImport | None, image: docker.Image
    ) -> list[local.Command]:

        def command(suffix: str, script: str, environment: dict[str, str] | None = None) -> local.Command:
            return local.Command(
                f"{name}-{suffix}",
                create=script,
                interpreter=BASH,
                environment={"IMAGE": image.image_name, **(environment or {})},
                # Re-run whenever a new image was built.
                triggers=[image.repo_digest],
                opts=pulumi.ResourceOptions(parent=self, depends_on=[image]),
            )

        if isinstance(delivery, KindLoad):
            load = 'kind load docker-image "$IMAGE" --name "$KIND_CLUSTER"'
            return [command("kind-load", load, {"KIND_CLUSTER": delivery.cluster_name})]
        if isinstance(delivery, K3sImport) and delivery.hosts is None:
            return [command("k3s-import", f'set -euo pipefail\ndocker save "$IMAGE" | {K3S_IMAGE_IMPORT}\n')]
        if isinstance(delivery, K3sImport) and delivery.hosts is not None:
            hosts = delivery.hosts
            return [
                command(f"k3s-import-{index}", ssh_import_script(hosts, host))
                for index, host in enumerate(hosts.all)
            ]
        return []
