"""The trainer image component: content-addressed tag, build arguments and delivery to the nodes."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from pathlib import Path

import pulumi
import pytest

from components.access import RegistryCredentials
from components.cluster import DOCKER_CLUSTER_LABEL, RemoteHosts
from components.shell import BASH
from components.trainer_image import (
    BUILD_SCRIPT,
    DOCKER_NODES_IMPORT_SCRIPT,
    KIND_LOAD_SCRIPT,
    REMOVE_SCRIPT,
    DockerNodesImport,
    K3sImport,
    KindLoad,
    TrainerImage,
    TrainerImageArgs,
    content_tag,
    ssh_import_script,
)
from tests.stack_helpers import contains_secret, evaluate, reveal


@pytest.fixture
def context(tmp_path: Path) -> Path:
    (tmp_path / "Dockerfile").write_text("FROM scratch\n")
    (tmp_path / ".dockerignore").write_text("runs/\n")
    (tmp_path / "trainer").mkdir()
    (tmp_path / "trainer" / "train.py").write_text("print('v1')\n")
    (tmp_path / "README.md").write_text("docs\n")
    return tmp_path


def args(context: Path, **changes: object) -> TrainerImageArgs:
    base = {
        "repository": "trainstack/trainer",
        "context": context,
        "platform": "linux/amd64",
        "push": False,
        "registry": None,
        "delivery": KindLoad("demo"),
        "build_args": {},
    }
    return TrainerImageArgs(**{**base, **changes})  # type: ignore[arg-type]


def test_tag_changes_with_the_image_inputs_only(context: Path) -> None:
    tag = content_tag(context)
    (context / "README.md").write_text("other docs\n")
    (context / "trainer" / "__pycache__").mkdir()
    (context / "trainer" / "__pycache__" / "train.cpython-311.pyc").write_bytes(b"\0")
    assert content_tag(context) == tag
    (context / "trainer" / "train.py").write_text("print('v2')\n")
    assert content_tag(context) != tag
    (context / "trainer" / "train.py").write_text("print('v1')\n")
    assert content_tag(context) == tag
    (context / "Dockerfile").write_text("FROM busybox\n")
    assert content_tag(context) != tag


def test_tag_covers_the_platform_and_every_build_argument(context: Path) -> None:
    """Another base image or platform is another image: it must get another tag, so the TrainJob rolls."""
    tag = content_tag(context, "linux/amd64", {"BASE_IMAGE": "a"})
    assert content_tag(context, "linux/arm64", {"BASE_IMAGE": "a"}) != tag
    assert content_tag(context, "linux/amd64", {"BASE_IMAGE": "b"}) != tag
    assert content_tag(context, "linux/amd64", {"BASE_IMAGE": "a", "BAKE_TOKENIZER": "0"}) != tag
    assert content_tag(context, "linux/amd64", {"BASE_IMAGE": "a"}) == tag

    def image_name(**changes: object) -> str:
        run = evaluate(lambda: TrainerImage("image", args(context, **changes)))
        return str(run.one("command:local:Command", "image-build").inputs["environment"]["IMAGE"])

    names = {
        image_name(),
        image_name(build_args={"BASE_IMAGE": "python:3.11-slim"}),
        image_name(platform="linux/arm64"),
    }
    assert len(names) == 3


def test_tag_does_not_depend_on_where_the_repository_lives(
    context: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    copy = tmp_path_factory.mktemp("elsewhere") / "repo"
    shutil.copytree(context, copy)
    assert content_tag(copy) == content_tag(context)


def fake_docker(tmp_path: Path) -> tuple[dict[str, str], Path]:
    """A `docker` (and `kind`) on PATH that logs its arguments and answers inspect with an image ID."""
    bin_dir, log = tmp_path / "fake-bin", tmp_path / "calls.log"
    bin_dir.mkdir()
    for tool in ("docker", "kind"):
        (bin_dir / tool).write_text(
            f'#!/bin/sh\necho "{tool} $*" >> {log}\n'
            'case "$1 $2" in "image inspect") echo sha256:abc;; "ps -q") echo node1; echo node2;; esac\n'
            'case "$*" in *--password-stdin*) cat > /dev/null;; esac\n'
        )
        (bin_dir / tool).chmod(0o755)
    return {"PATH": f"{bin_dir}:{os.environ['PATH']}"}, log


def test_build_script_passes_platform_and_build_arguments_and_prints_the_image_id(tmp_path: Path) -> None:
    path, log = fake_docker(tmp_path)
    environment = {
        **path,
        "IMAGE": "trainstack/trainer:t1",
        "CONTEXT": "/src",
        "PLATFORM": "linux/amd64",
        "PUSH": "0",
        "BUILD_ARG_BASE_IMAGE": "base:1",
        "BUILD_ARG_BAKE_TOKENIZER": "0",
    }
    result = subprocess.run(
        [*BASH, BUILD_SCRIPT], env=environment, capture_output=True, text=True, check=True
    )
    assert result.stdout == "sha256:abc\n"
    build = log.read_text().splitlines()[0]
    assert build == (
        "docker build --platform linux/amd64 --tag trainstack/trainer:t1 --file /src/Dockerfile"
        " --build-arg BAKE_TOKENIZER=0 --build-arg BASE_IMAGE=base:1 /src"
    )


def test_kind_build_and_load(context: Path) -> None:
    run = evaluate(
        lambda: TrainerImage("image", args(context, build_args={"BASE_IMAGE": "python:3.11-slim"}))
    )
    build = run.one("command:local:Command", "image-build")
    image_name = (
        f"trainstack/trainer:{content_tag(context, 'linux/amd64', {'BASE_IMAGE': 'python:3.11-slim'})}"
    )
    assert build.inputs["environment"] == {
        "IMAGE": image_name,
        "CONTEXT": str(context),
        "PLATFORM": "linux/amd64",
        "PUSH": "0",
        "BUILD_ARG_BASE_IMAGE": "python:3.11-slim",
    }
    assert build.inputs["create"] == BUILD_SCRIPT
    load = run.one("command:local:Command", "image-kind-load")
    assert load.inputs["create"] == KIND_LOAD_SCRIPT
    assert "kind load image-archive" in KIND_LOAD_SCRIPT and "docker-image" not in KIND_LOAD_SCRIPT
    assert load.inputs["environment"] == {"IMAGE": image_name, "KIND_CLUSTER": "demo"}
    # Re-loaded whenever a build yields a new image (the mock's image ID is a hash of the name).
    assert load.inputs["triggers"][0] == "sha256:" + hashlib.sha256(image_name.encode()).hexdigest()
    assert run.depends_on(load, build)


def test_kind_load_script_loads_an_archive(tmp_path: Path) -> None:
    path, log = fake_docker(tmp_path)
    environment = {**path, "IMAGE": "trainstack/trainer:t1", "KIND_CLUSTER": "demo"}
    subprocess.run([*BASH, KIND_LOAD_SCRIPT], env=environment, capture_output=True, text=True, check=True)
    calls = log.read_text().splitlines()
    assert calls[0].startswith("docker save trainstack/trainer:t1 -o ")
    archive = calls[0].rsplit(" ", 1)[1]
    assert calls[1] == f"kind load image-archive {archive} --name demo"


def test_delivery_follows_the_cluster_identity(context: Path) -> None:
    """A cluster created anew has none of the old one's images: a new identity delivers the image again."""

    def delivery(identity: str) -> list[object]:
        run = evaluate(lambda: TrainerImage("image", args(context), cluster_identity=identity))
        return list(run.one("command:local:Command", "image-kind-load").inputs["triggers"])

    assert delivery("cluster-a") != delivery("cluster-b")
    assert delivery("cluster-a") == delivery("cluster-a")


def test_destroy_and_replacement_remove_the_local_image(context: Path) -> None:
    run = evaluate(lambda: TrainerImage("image", args(context)))
    build = run.one("command:local:Command", "image-build")
    assert build.inputs["delete"] == REMOVE_SCRIPT
    assert REMOVE_SCRIPT.startswith('docker image rm --force "$IMAGE"')
    # A new tag replaces the build: the old one's delete removes the old tag, before the new build.
    assert build.inputs["triggers"] == [build.inputs["environment"]["IMAGE"], False]
    assert build.delete_before_replace


def test_push_uses_the_registry_digest_and_credentials(context: Path) -> None:
    registry = RegistryCredentials("ghcr.io", "bot", "pw")

    def program() -> None:
        image = TrainerImage(
            "image",
            args(context, repository="ghcr.io/acme/trainer", push=True, registry=registry, delivery=None),
        )

        pulumi.export("reference", image.reference)

    run = evaluate(program)
    build = run.one("command:local:Command", "image-build")
    # The password makes the whole environment a secret in the state.
    assert contains_secret(build.inputs["environment"])
    environment = reveal(build.inputs["environment"])
    assert environment["PUSH"] == "1" and environment["REGISTRY_PASSWORD"] == "pw"
    assert (environment["REGISTRY_SERVER"], environment["REGISTRY_USERNAME"]) == ("ghcr.io", "bot")
    assert [command.name for command in run.of_type("command:local:Command")] == ["image-build"]
    assert reveal(run.outputs["reference"]).startswith("ghcr.io/acme/trainer@sha256:")


def test_push_logs_in_with_a_throwaway_config_and_prints_the_registry_digest(tmp_path: Path) -> None:
    path, log = fake_docker(tmp_path)
    bin_dir = Path(path["PATH"].split(":", 1)[0])
    # This docker answers inspect with the pushed digest.
    (bin_dir / "docker").write_text(
        f'#!/bin/sh\necho "docker $* DOCKER_CONFIG=$DOCKER_CONFIG" >> {log}\n'
        'case "$*" in *--password-stdin*) cat > /dev/null;; esac\n'
        'case "$1 $2" in "image inspect") echo other/repo@sha256:x; echo ghcr.io/acme/trainer@sha256:def;; esac\n'
    )
    environment = {
        **path,
        "IMAGE": "ghcr.io/acme/trainer:t1",
        "CONTEXT": "/src",
        "PLATFORM": "linux/amd64",
        "PUSH": "1",
        "REGISTRY_SERVER": "ghcr.io",
        "REGISTRY_USERNAME": "bot",
        "REGISTRY_PASSWORD": "pw",
    }
    result = subprocess.run(
        [*BASH, BUILD_SCRIPT], env=environment, capture_output=True, text=True, check=True
    )
    assert result.stdout == "ghcr.io/acme/trainer@sha256:def\n"
    calls = log.read_text()
    assert "docker login --username bot --password-stdin ghcr.io DOCKER_CONFIG=/" in calls
    assert "docker push ghcr.io/acme/trainer:t1" in calls
    assert "pw" not in calls  # the password went to stdin, never to the command line


def test_k3s_local_import(context: Path) -> None:
    run = evaluate(lambda: TrainerImage("image", args(context, delivery=K3sImport(None))))
    command = run.one("command:local:Command", "image-k3s-import")
    assert 'docker save "$IMAGE" |' in command.inputs["create"]
    assert "sudo -n k3s ctr -n k8s.io images import -" in command.inputs["create"]
    assert "needs passwordless sudo" in command.inputs["create"]


def test_docker_nodes_import_into_every_node(context: Path, tmp_path: Path) -> None:
    run = evaluate(lambda: TrainerImage("image", args(context, delivery=DockerNodesImport("demo"))))
    command = run.one("command:local:Command", "image-node-import")
    assert command.inputs["create"] == DOCKER_NODES_IMPORT_SCRIPT
    assert command.inputs["environment"]["CLUSTER"] == "demo"
    path, log = fake_docker(tmp_path)
    environment = {**path, "IMAGE": "trainstack/trainer:t1", "CLUSTER": "demo"}
    subprocess.run(
        [*BASH, DOCKER_NODES_IMPORT_SCRIPT], env=environment, capture_output=True, text=True, check=True
    )
    calls = log.read_text().splitlines()
    assert calls[0].startswith("docker save trainstack/trainer:t1 -o ")
    assert calls[1] == f"docker ps -q --filter label={DOCKER_CLUSTER_LABEL}=demo"
    assert calls[2:] == [
        "docker exec -i node1 k3s ctr -n k8s.io images import -",
        "docker exec -i node2 k3s ctr -n k8s.io images import -",
    ]


def test_k3s_remote_import_streams_over_ssh_to_every_node(context: Path) -> None:
    hosts = RemoteHosts("192.0.2.1", ("192.0.2.2",), "ops", 2222, context / "key file")
    run = evaluate(lambda: TrainerImage("image", args(context, delivery=K3sImport(hosts))))
    commands = sorted(
        (r for r in run.of_type("command:local:Command") if r.name != "image-build"),
        key=lambda r: r.name,
    )
    assert [c.name for c in commands] == ["image-k3s-import-0", "image-k3s-import-1"]
    assert "ops@192.0.2.1" in commands[0].inputs["create"] and "ops@192.0.2.2" in commands[1].inputs["create"]
    assert not contains_secret(commands[0].inputs["create"])
    script = ssh_import_script(hosts, "192.0.2.2")
    assert f"-i '{context / 'key file'}' -p 2222" in script
