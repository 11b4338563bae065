"""The trainer image component: content-addressed tag, build arguments and delivery to the nodes."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import pulumi
import pytest

from components.access import RegistryCredentials
from components.cluster import RemoteHosts
from components.trainer_image import (
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
        "base_image": "",
        "push": False,
        "registry": None,
        "delivery": KindLoad("demo"),
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


def test_tag_does_not_depend_on_where_the_repository_lives(
    context: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    copy = tmp_path_factory.mktemp("elsewhere") / "repo"
    shutil.copytree(context, copy)
    assert content_tag(copy) == content_tag(context)


def test_kind_build_and_load(context: Path) -> None:
    run = evaluate(lambda: TrainerImage("image", args(context, base_image="python:3.11-slim")))
    image = run.one("docker:index/image:Image")
    assert image.inputs["imageName"] == f"trainstack/trainer:{content_tag(context)}"
    assert image.inputs["build"]["context"] == str(context)
    assert image.inputs["build"]["dockerfile"] == str(context / "Dockerfile")
    assert image.inputs["build"]["platform"] == "linux/amd64"
    assert image.inputs["build"]["args"] == {"BASE_IMAGE": "python:3.11-slim"}
    assert image.inputs["skipPush"] is True
    load = run.one("command:local:Command", "image-kind-load")
    assert 'kind load docker-image "$IMAGE" --name "$KIND_CLUSTER"' in load.inputs["create"]
    assert load.inputs["environment"] == {"IMAGE": image.inputs["imageName"], "KIND_CLUSTER": "demo"}
    # Re-loaded whenever a build yields a new image (the mock's image ID is a hash of the name).
    assert load.inputs["triggers"] == [
        "sha256:" + hashlib.sha256(image.inputs["imageName"].encode()).hexdigest()
    ]
    assert run.depends_on(load, image)


def test_destroy_removes_the_local_image(context: Path) -> None:
    run = evaluate(lambda: TrainerImage("image", args(context)))
    image = run.one("docker:index/image:Image")
    cleanup = run.one("command:local:Command", "image-local-cleanup")
    assert cleanup.inputs["create"] == "true"
    assert cleanup.inputs["delete"].startswith('docker image rm --force "$IMAGE"')
    assert cleanup.inputs["environment"] == {"IMAGE": image.inputs["imageName"]}
    # A new tag replaces the command: the old one's delete then removes the old tag.
    assert cleanup.inputs["triggers"] == [image.inputs["imageName"]]
    assert run.depends_on(cleanup, image)


def test_push_uses_the_registry_digest_and_credentials(context: Path) -> None:
    registry = RegistryCredentials("ghcr.io", "bot", "pw")

    def program() -> None:
        image = TrainerImage(
            "image",
            args(context, repository="ghcr.io/acme/trainer", push=True, registry=registry, delivery=None),
        )

        pulumi.export("reference", image.reference)

    run = evaluate(program)
    image = run.one("docker:index/image:Image")
    assert image.inputs["skipPush"] is False
    assert reveal(image.inputs["registry"]) == {"server": "ghcr.io", "username": "bot", "password": "pw"}
    assert [command.name for command in run.of_type("command:local:Command")] == ["image-local-cleanup"]
    assert reveal(run.outputs["reference"]).startswith("ghcr.io/acme/trainer@sha256:")


def test_k3s_local_import(context: Path) -> None:
    run = evaluate(lambda: TrainerImage("image", args(context, delivery=K3sImport(None))))
    command = run.one("command:local:Command", "image-k3s-import")
    assert 'docker save "$IMAGE" |' in command.inputs["create"]
    assert "k3s ctr -n k8s.io images import -" in command.inputs["create"]


def test_k3s_remote_import_streams_over_ssh_to_every_node(context: Path) -> None:
    hosts = RemoteHosts("192.0.2.1", ("192.0.2.2",), "ops", 2222, context / "key file")
    run = evaluate(lambda: TrainerImage("image", args(context, delivery=K3sImport(hosts))))
    commands = sorted(
        (r for r in run.of_type("command:local:Command") if r.name != "image-local-cleanup"),
        key=lambda r: r.name,
    )
    assert [c.name for c in commands] == ["image-k3s-import-0", "image-k3s-import-1"]
    assert "ops@192.0.2.1" in commands[0].inputs["create"] and "ops@192.0.2.2" in commands[1].inputs["create"]
    assert not contains_secret(commands[0].inputs["create"])
    script = ssh_import_script(hosts, "192.0.2.2")
    assert f"-i '{context / 'key file'}' -p 2222" in script
