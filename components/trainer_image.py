"""The trainer image: built from the repository's Dockerfile, tagged by content, delivered to the cluster.

The build is the Docker CLI run by a command (no Docker provider plugin): what `docker build` does is what the
user would run by hand, and the tag, a hash of everything that goes into the image, decides when it runs again.
"""

from __future__ import annotations

import hashlib
import shlex
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import pulumi
from pulumi_command import local

from components.access import RegistryCredentials
from components.cluster import DOCKER_CLUSTER_LABEL, RemoteHosts
from components.shell import BASH, as_root, require_root

# What goes into the image, hence into its tag: a change to any of these rolls the job out.
IMAGE_INPUT_FILES = ("Dockerfile", ".dockerignore")
IMAGE_INPUT_TREES = ("trainer",)
# containerd namespace the kubelet's images live in.
K3S_IMAGE_IMPORT = as_root("k3s ctr -n k8s.io images import -")


@dataclass(frozen=True)
class KindLoad:
    """Deliver the image with `kind load image-archive` (works with Docker's containerd image store too)."""

    # The kind cluster.
    cluster_name: str


@dataclass(frozen=True)
class K3sImport:
    """Deliver the image with `docker save | k3s ctr images import -` on every node."""

    # Remote nodes, reached over SSH; None imports into the k3s on this machine.
    hosts: RemoteHosts | None


@dataclass(frozen=True)
class DockerNodesImport:
    """Deliver the image into every container node of a k3s-in-Docker cluster."""

    # The cluster (its nodes carry its label).
    cluster_name: str


Delivery = KindLoad | K3sImport | DockerNodesImport


@dataclass(frozen=True)
class TrainerImageArgs:
    """How to build and deliver the trainer image."""

    # Image repository, e.g. trainstack/trainer or ghcr.io/acme/trainer.
    repository: str
    # Build context, the repository root (holds the Dockerfile).
    context: Path
    # Build platform, e.g. linux/amd64.
    platform: str
    # Push to the repository's registry (then the cluster pulls it by digest).
    push: bool
    # Login for the push; None uses the Docker CLI's own login.
    registry: RegistryCredentials | None
    # How an unpushed image reaches the nodes; None when pushing.
    delivery: Delivery | None
    # Dockerfile build arguments (BASE_IMAGE, BAKE_TOKENIZER, ...); empty keeps the Dockerfile's defaults.
    build_args: Mapping[str, str] = field(default_factory=dict)


def image_input_paths(context: Path) -> Iterator[Path]:
    """The files whose content defines the image (bytecode caches excluded)."""
    for name in IMAGE_INPUT_FILES:
        if (context / name).is_file():
            yield context / name
    for tree in IMAGE_INPUT_TREES:
        for path in (context / tree).rglob("*"):
            if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".pyc":
                yield path


def content_tag(context: Path, platform: str = "", build_args: Mapping[str, str] | None = None) -> str:
    """A tag that changes exactly when the image would: a hash of its files, the platform and the build arguments."""
    digest = hashlib.sha256()
    for path in sorted(image_input_paths(context)):
        digest.update(path.relative_to(context).as_posix().encode() + b"\0")
        digest.update(path.read_bytes() + b"\0")
    digest.update(f"platform={platform}\0".encode())
    for key, value in sorted((build_args or {}).items()):
        digest.update(f"arg:{key}={value}\0".encode())
    return digest.hexdigest()[:16]


# Builds $IMAGE (the build arguments come as BUILD_ARG_<NAME> variables), pushes it when PUSH=1 (logging in
# with a throwaway Docker config when credentials are given) and prints what pins it: the registry digest,
# or the local image ID.
BUILD_SCRIPT = """set -euo pipefail
args=(--platform "$PLATFORM" --tag "$IMAGE" --file "$CONTEXT/Dockerfile")
while IFS='=' read -r name value; do
  args+=(--build-arg "${name#BUILD_ARG_}=$value")
done < <(env | grep '^BUILD_ARG_' | sort)
docker build "${args[@]}" "$CONTEXT" >&2
if [ "$PUSH" != 1 ]; then
  docker image inspect --format '{{.Id}}' "$IMAGE"
  exit 0
fi
if [ -n "${REGISTRY_SERVER:-}" ]; then
  DOCKER_CONFIG="$(mktemp -d)"
  export DOCKER_CONFIG
  trap 'rm -rf "$DOCKER_CONFIG"' EXIT
  printf '%s' "$REGISTRY_PASSWORD" | docker login --username "$REGISTRY_USERNAME" --password-stdin "$REGISTRY_SERVER" >&2
fi
docker push "$IMAGE" >&2
docker image inspect --format '{{range .RepoDigests}}{{println .}}{{end}}' "$IMAGE" | grep -m 1 "^${IMAGE%:*}@"
"""

# The tag is removed from the local engine on destroy and when a new build replaces it; the base image
# and the build cache stay (docs/stack.md says how to remove them).
REMOVE_SCRIPT = 'docker image rm --force "$IMAGE" >/dev/null 2>&1 || true'

# $IMAGE saved to a temporary archive, $archive, removed when the script ends.
_SAVE_ARCHIVE = """set -euo pipefail
archive="$(mktemp)"
trap 'rm -f "$archive"' EXIT
docker save "$IMAGE" -o "$archive"
"""

# Saves the image once, then imports it into every node container of the k3s-in-Docker cluster.
DOCKER_NODES_IMPORT_SCRIPT = f"""{_SAVE_ARCHIVE}nodes=$(docker ps -q --filter "label={DOCKER_CLUSTER_LABEL}=$CLUSTER")
if [ -z "$nodes" ]; then echo "no running node of the k3s-in-Docker cluster $CLUSTER" >&2; exit 1; fi
for node in $nodes; do
  docker exec -i "$node" k3s ctr -n k8s.io images import - <"$archive" >&2
done
"""

# kind load docker-image fails with Docker's containerd image store (kubernetes-sigs/kind#3795): an archive works.
KIND_LOAD_SCRIPT = f"""{_SAVE_ARCHIVE}kind load image-archive "$archive" --name "$KIND_CLUSTER" >&2
"""


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
    return f'set -euo pipefail\ndocker save "$IMAGE" | {ssh} {shlex.quote(K3S_IMAGE_IMPORT)}\n'


LOCAL_K3S_IMPORT_SCRIPT = f'set -euo pipefail\n{require_root("importing the image into k3s")}docker save "$IMAGE" | {K3S_IMAGE_IMPORT}\n'


class TrainerImage(pulumi.ComponentResource):
    """The built image and the commands that put it on the nodes."""

    # What the TrainJob runs: the registry digest when pushed, else the content-addressed tag.
    reference: pulumi.Output[str]
    # The reference pinned to a digest: the registry digest, or tag@local image ID when not pushed.
    pinned: pulumi.Output[str]
    # Commands that put an unpushed image on the nodes; depending on this component waits for them.
    deliveries: list[local.Command]

    def __init__(
        self,
        name: str,
        args: TrainerImageArgs,
        *,
        cluster_identity: pulumi.Input[str] = "",
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        """cluster_identity: changes when the cluster is created anew, which then needs the image again."""
        super().__init__("trainstack:index:TrainerImage", name, None, opts)
        image_name = f"{args.repository}:{content_tag(args.context, args.platform, args.build_args)}"
        environment: dict[str, pulumi.Input[str]] = {
            "IMAGE": image_name,
            "CONTEXT": str(args.context),
            "PLATFORM": args.platform,
            "PUSH": "1" if args.push else "0",
            **{f"BUILD_ARG_{key}": value for key, value in args.build_args.items()},
        }
        if args.push and args.registry is not None:
            environment |= {
                "REGISTRY_SERVER": args.registry.server,
                "REGISTRY_USERNAME": args.registry.username,
                "REGISTRY_PASSWORD": pulumi.Output.secret(args.registry.password),
            }
        build = local.Command(
            f"{name}-build",
            create=BUILD_SCRIPT,
            delete=REMOVE_SCRIPT,
            interpreter=BASH,
            environment=environment,
            # The tag covers every input of the image; pushing or not changes what the build prints.
            triggers=[image_name, args.push],
            logging=local.Logging.STDERR,
            # Another build may carry the same tag (push toggled): remove the old one before building.
            opts=pulumi.ResourceOptions(parent=self, delete_before_replace=True),
        )
        digest = build.stdout.apply(str.strip)
        if args.push:
            self.reference = digest
            self.pinned = digest
        else:
            # Unpushed, the digest is the local image ID: not pullable, but it pins what was loaded.
            self.reference = build.stdout.apply(lambda _: image_name)
            self.pinned = digest.apply(lambda image_id: f"{image_name}@{image_id}")
        self.deliveries = self._deliver(name, args.delivery, image_name, digest, cluster_identity, build)
        self.register_outputs({"image": self.pinned})

    def _deliver(
        self,
        name: str,
        delivery: Delivery | None,
        image_name: str,
        digest: pulumi.Output[str],
        cluster_identity: pulumi.Input[str],
        build: local.Command,
    ) -> list[local.Command]:

        def command(suffix: str, script: str, environment: dict[str, str] | None = None) -> local.Command:
            return local.Command(
                f"{name}-{suffix}",
                create=script,
                interpreter=BASH,
                environment={"IMAGE": image_name, **(environment or {})},
                # Again for every new image, and for every new cluster (a replaced one has no images).
                triggers=[digest, cluster_identity],
                opts=pulumi.ResourceOptions(parent=self, depends_on=[build]),
            )

        if isinstance(delivery, KindLoad):
            return [command("kind-load", KIND_LOAD_SCRIPT, {"KIND_CLUSTER": delivery.cluster_name})]
        if isinstance(delivery, DockerNodesImport):
            return [command("node-import", DOCKER_NODES_IMPORT_SCRIPT, {"CLUSTER": delivery.cluster_name})]
        if isinstance(delivery, K3sImport) and delivery.hosts is None:
            return [command("k3s-import", LOCAL_K3S_IMPORT_SCRIPT)]
        if isinstance(delivery, K3sImport) and delivery.hosts is not None:
            hosts = delivery.hosts
            return [
                command(f"k3s-import-{index}", ssh_import_script(hosts, host))
                for index, host in enumerate(hosts.all)
            ]
        return []
