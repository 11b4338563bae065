"""The trainer image component: content-addressed tag, the pulumi-docker build and push, delivery to the nodes."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import pulumi
import pytest

from components.access import RegistryCredentials
from components.cluster.k3s_docker import DOCKER_CLUSTER_LABEL
from components.cluster.provider import RemoteHosts
from components.shell import BASH, script
from components.trainer_image import (
    DOCKER_NODES_IMPORT_SCRIPT,
    K3S_IMPORT_SCRIPT,
    K3S_NODE_IMPORT_SCRIPT,
    KIND_LOAD_SCRIPT,
    REGISTRY_DELETE_SCRIPT,
    UNTAG_SCRIPT,
    DockerNodesImport,
    K3sImport,
    KindLoad,
    TrainerImage,
    TrainerImageArgs,
    content_tag,
)
from tests.support.shell_stubs import run_file, run_text, stub_tools
from tests.support.stack_helpers import contains_secret, evaluate, is_secret, reveal, without_secrets

ACCEPT_MANIFESTS = (
    "Accept: application/vnd.docker.distribution.manifest.v2+json, application/vnd.oci.image.manifest.v1+json,"
    " application/vnd.oci.image.index.v1+json"
)
IMAGE = "docker:index/image:Image"
COMMAND = "command:local:Command"


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


def mock_image_id(image_name: str) -> str:
    """The image ID the mock engine's docker.Image reports (tests/support/stack_helpers.py)."""
    return "sha256:" + hashlib.sha256(image_name.encode()).hexdigest()


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
        return str(run.one(IMAGE).inputs["imageName"])

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


def test_unpushed_image_is_built_from_the_dockerfile_with_platform_and_arguments(context: Path) -> None:
    def program() -> None:
        image = TrainerImage("image", args(context, build_args={"BASE_IMAGE": "python:3.11-slim"}))
        pulumi.export("reference", image.reference)
        pulumi.export("pinned", image.pinned)

    run = evaluate(program)
    image = run.one(IMAGE)
    image_name = (
        f"trainstack/trainer:{content_tag(context, 'linux/amd64', {'BASE_IMAGE': 'python:3.11-slim'})}"
    )
    assert image.inputs["imageName"] == image_name
    assert image.inputs["build"] == {
        "context": str(context),
        "dockerfile": str(context / "Dockerfile"),
        "platform": "linux/amd64",
        "args": {"BASE_IMAGE": "python:3.11-slim"},
        "builderVersion": "BuilderBuildKit",
    }
    # Built into the local engine only, with no registry login.
    assert image.inputs["skipPush"] is True and "registry" not in image.inputs
    # The TrainJob runs the tag; the output pins it to the local image ID the build reported.
    assert run.outputs["reference"] == image_name
    assert run.outputs["pinned"] == f"{image_name}@{mock_image_id(image_name)}"


def test_push_sends_the_image_to_the_registry_with_a_secret_password(context: Path) -> None:
    password = "registry-pw-do-not-leak"
    registry = RegistryCredentials("ghcr.io", "bot", password)

    def program() -> None:
        image = TrainerImage(
            "image",
            args(context, repository="ghcr.io/acme/trainer", push=True, registry=registry, delivery=None),
        )
        pulumi.export("reference", image.reference)
        pulumi.export("pinned", image.pinned)

    run = evaluate(program)
    image = run.one(IMAGE)
    assert image.inputs["skipPush"] is False
    assert image.inputs["imageName"] == f"ghcr.io/acme/trainer:{content_tag(context, 'linux/amd64')}"
    # The login's password makes the registry input a secret (the SDK marks the object that holds one).
    assert is_secret(image.inputs["registry"])
    assert reveal(image.inputs["registry"]) == {"server": "ghcr.io", "username": "bot", "password": password}
    for resource in run.resources:
        assert password not in repr(without_secrets(resource.inputs)), resource.name
    assert password not in repr(without_secrets(run.outputs))
    # Pulled by the registry digest, so nothing is delivered to the nodes; the pushed image is deleted on destroy.
    assert sorted(command.name for command in run.of_type(COMMAND)) == [
        "image-registry-delete",
        "image-untag",
    ]
    delete = run.one(COMMAND, "image-registry-delete")
    assert delete.inputs["delete"] == REGISTRY_DELETE_SCRIPT and "create" not in delete.inputs
    assert is_secret(delete.inputs["environment"])
    assert reveal(delete.inputs["environment"])["REGISTRY_PASSWORD"] == password
    assert (
        reveal(run.outputs["reference"]) == f"ghcr.io/acme/trainer@{mock_image_id(image.inputs['imageName'])}"
    )
    assert run.outputs["pinned"] == run.outputs["reference"]


def test_push_without_credentials_uses_the_docker_cli_login(context: Path) -> None:
    run = evaluate(
        lambda: TrainerImage(
            "image", args(context, repository="ghcr.io/acme/trainer", push=True, delivery=None)
        )
    )
    image = run.one(IMAGE)
    assert image.inputs["skipPush"] is False and "registry" not in image.inputs
    delete = run.one(COMMAND, "image-registry-delete")
    assert delete.inputs["environment"] == {
        "IMAGE_DIGEST": f"ghcr.io/acme/trainer@{mock_image_id(image.inputs['imageName'])}"
    }
    # A new image replaces the command; the old one's delete runs once the new one is pushed.
    assert delete.inputs["triggers"] == [delete.inputs["environment"]["IMAGE_DIGEST"]]
    assert run.depends_on(delete, image) and not delete.delete_before_replace


def registry_stub(tmp_path: Path, status: str) -> tuple[dict[str, str], Path, Path]:
    """curl that records its stdin (the config with the login) and answers an HTTP status."""
    config = tmp_path / "curl-config"
    environment, log = stub_tools(tmp_path, {"curl": f"cat > {config}\nprintf {status}"})
    return environment, log, config


@pytest.mark.parametrize(
    ("digest", "url"),
    [
        (
            "127.0.0.1:5001/trainstack/trainer@sha256:ab",
            "http://127.0.0.1:5001/v2/trainstack/trainer/manifests/sha256:ab",
        ),
        ("localhost:5000/t@sha256:cd", "http://localhost:5000/v2/t/manifests/sha256:cd"),
        ("ghcr.io/acme/trainer@sha256:ef", "https://ghcr.io/v2/acme/trainer/manifests/sha256:ef"),
    ],
)
def test_registry_delete_deletes_the_manifest_by_digest(tmp_path: Path, digest: str, url: str) -> None:
    environment, log, config = registry_stub(tmp_path, "202")
    result = run_file(
        "trainer_image_registry_delete.sh",
        {**environment, "IMAGE_DIGEST": digest, "REGISTRY_USERNAME": "bot", "REGISTRY_PASSWORD": 'p"w\\x'},
    )
    (call,) = log.read_text().splitlines()
    assert call.startswith("curl ") and call.endswith(f" -X DELETE -H {ACCEPT_MANIFESTS} {url}")
    # The login goes to curl on stdin in its config syntax (quotes and backslashes escaped), never as an argument.
    assert 'p"w' not in call and config.read_text() == 'user = "bot:p\\"w\\\\x"\n'
    assert result.stderr == ""


def test_registry_delete_without_login_sends_none(tmp_path: Path) -> None:
    environment, _, config = registry_stub(tmp_path, "404")  # already gone: nothing to say
    result = run_file("trainer_image_registry_delete.sh", {**environment, "IMAGE_DIGEST": "r.io/t@sha256:a"})
    assert config.read_text() == "\n" and result.stderr == ""


@pytest.mark.parametrize("status", ["405", "401", "000"])
def test_a_registry_that_keeps_the_image_is_named_and_destroy_goes_on(tmp_path: Path, status: str) -> None:
    environment, _, _ = registry_stub(tmp_path, status)
    result = run_file("trainer_image_registry_delete.sh", {**environment, "IMAGE_DIGEST": "r.io/t@sha256:a"})
    assert result.returncode == 0
    assert result.stderr.strip() == (
        f"trainstack: the registry kept r.io/t@sha256:a (DELETE https://r.io/v2/t/manifests/sha256:a answered"
        f" {status}); delete it there by hand"
    )


def test_destroy_and_a_new_tag_remove_the_local_tag(context: Path, tmp_path: Path) -> None:
    """pulumi-docker's Image deletes nothing: the untag command's delete removes the tag."""
    run = evaluate(lambda: TrainerImage("image", args(context)))
    image, untag = run.one(IMAGE), run.one(COMMAND, "image-untag")
    image_name = image.inputs["imageName"]
    assert untag.inputs["delete"] == UNTAG_SCRIPT == script("trainer_image_untag.sh")
    assert "create" not in untag.inputs and untag.inputs["interpreter"] == BASH
    assert untag.inputs["environment"] == {"IMAGE": image_name}
    # A new tag replaces the command, and the replaced one's delete removes the old tag once the new image is
    # built (create before delete); the same tag, pushed or not, keeps it.
    assert untag.inputs["triggers"] == [image_name]
    assert run.depends_on(untag, image) and not untag.delete_before_replace
    environment, log = stub_tools(tmp_path, {"docker": "exit 1"})
    result = run_file("trainer_image_untag.sh", {**environment, "IMAGE": image_name})
    assert result.returncode == 0  # an image already gone is not an error
    assert log.read_text().splitlines() == [f"docker image rm --force {image_name}"]


def docker_stub(tmp_path: Path) -> tuple[dict[str, str], Path]:
    """docker (save writes an archive, ps lists two nodes, exec reads the archive) and kind (get nodes lists
    $KIND_NODES, load reads the archive), logged."""
    return stub_tools(
        tmp_path,
        {
            "docker": (
                'case "$1" in save) printf archive > "$4";; ps) echo node1; echo node2;;'
                ' exec) echo "read $(cat)" >> "$(dirname "$0")/../calls.log";; esac'
            ),
            "kind": (
                'case "$1" in get) printf "$KIND_NODES";;'
                ' load) echo "read $(cat "$3")" >> "$(dirname "$0")/../calls.log";; esac'
            ),
        },
    )


def test_kind_load_saves_an_archive_and_loads_it(context: Path, tmp_path: Path) -> None:
    run = evaluate(lambda: TrainerImage("image", args(context)))
    image, load = run.one(IMAGE), run.one(COMMAND, "image-kind-load")
    image_name = image.inputs["imageName"]
    assert load.inputs["create"] == script("trainer_image_archive.sh", "trainer_image_kind_load.sh")
    assert load.inputs["environment"] == {"IMAGE": image_name, "KIND_CLUSTER": "demo"}
    # Loaded again whenever a build yields a new image.
    assert load.inputs["triggers"][0] == mock_image_id(image_name)
    assert run.depends_on(load, image)
    environment, log = docker_stub(tmp_path)
    one_node = {**environment, "IMAGE": "trainstack/trainer:t1", "KIND_CLUSTER": "demo"}
    run_text(KIND_LOAD_SCRIPT, {**one_node, "KIND_NODES": "demo-control-plane\n"})
    calls = log.read_text().splitlines()
    assert calls[0].startswith("docker save trainstack/trainer:t1 -o ")
    archive = calls[0].rsplit(" ", 1)[1]
    assert calls[1:] == [
        "kind get nodes --name demo",
        f"kind load image-archive {archive} --name demo",
        "read archive",
    ]
    assert not Path(archive).exists()  # the archive goes when the script ends


def test_kind_load_skips_the_control_plane_of_a_cluster_with_workers(tmp_path: Path) -> None:
    """Tainted NoSchedule there, it runs no training: a copy of several GB on it is disk and time for nothing
    (the first real 2-node kind run ran out of disk loading it into all three nodes)."""
    environment, log = docker_stub(tmp_path)
    nodes = "demo-control-plane\ndemo-worker\ndemo-worker2\n"
    run_text(KIND_LOAD_SCRIPT, {**environment, "IMAGE": "t:1", "KIND_CLUSTER": "demo", "KIND_NODES": nodes})
    load = [line for line in log.read_text().splitlines() if line.startswith("kind load")]
    assert len(load) == 1 and load[0].endswith("--name demo --nodes demo-worker,demo-worker2")


def test_delivery_follows_the_cluster_identity(context: Path) -> None:
    """A cluster created anew has none of the old one's images: a new identity delivers the image again."""

    def delivery(identity: str) -> list[object]:
        run = evaluate(lambda: TrainerImage("image", args(context), cluster_identity=identity))
        return list(run.one(COMMAND, "image-kind-load").inputs["triggers"])

    assert delivery("cluster-a") != delivery("cluster-b")
    assert delivery("cluster-a") == delivery("cluster-a")


def test_docker_nodes_import_into_every_node(context: Path, tmp_path: Path) -> None:
    run = evaluate(
        lambda: TrainerImage("image", args(context, delivery=DockerNodesImport("demo", DOCKER_CLUSTER_LABEL)))
    )
    command = run.one(COMMAND, "image-node-import")
    assert command.inputs["create"] == script(
        "trainer_image_archive.sh", "trainer_image_docker_nodes_import.sh"
    )
    assert command.inputs["environment"]["CLUSTER"] == "demo"
    assert command.inputs["environment"]["CLUSTER_LABEL"] == DOCKER_CLUSTER_LABEL
    environment, log = docker_stub(tmp_path)
    variables = {
        "IMAGE": "trainstack/trainer:t1",
        "CLUSTER_LABEL": "dev.trainstack.cluster",
        "CLUSTER": "demo",
    }
    run_text(DOCKER_NODES_IMPORT_SCRIPT, {**environment, **variables})
    calls = log.read_text().splitlines()
    assert calls[0].startswith("docker save trainstack/trainer:t1 -o ")
    assert calls[1] == "docker ps -q --filter label=dev.trainstack.cluster=demo"
    assert calls[2:] == [
        "docker exec -i node1 k3s ctr -n k8s.io images import -",
        "read archive",
        "docker exec -i node2 k3s ctr -n k8s.io images import -",
        "read archive",
    ]


def test_docker_nodes_import_fails_without_a_running_node(tmp_path: Path) -> None:
    environment, _ = stub_tools(tmp_path, {"docker": 'case "$1" in save) : > "$4";; esac'})
    variables = {
        "IMAGE": "trainstack/trainer:t1",
        "CLUSTER_LABEL": "dev.trainstack.cluster",
        "CLUSTER": "demo",
    }
    result = run_text(DOCKER_NODES_IMPORT_SCRIPT, {**environment, **variables}, check=False)
    assert result.returncode == 1
    assert result.stderr == "no running node of the k3s-in-Docker cluster demo\n"


def test_k3s_local_import(context: Path) -> None:
    run = evaluate(lambda: TrainerImage("image", args(context, delivery=K3sImport(None))))
    command = run.one(COMMAND, "image-k3s-import")
    assert command.inputs["create"] == K3S_IMPORT_SCRIPT == script("trainer_image_k3s_import.sh")
    assert command.inputs["environment"] == {
        "IMAGE": run.one(IMAGE).inputs["imageName"],
        "NODE_IMPORT": script("root.sh", "trainer_image_k3s_node_import.sh"),
    }


# id answers as a user (uid 1000, ops) or as root; sudo -n runs its command, or fails like a sudo that would prompt.
USER_ID = 'case "$1" in -u) echo "${STUB_UID:-1000}";; -un) echo ops;; esac'
SUDO = 'if [ -n "$STUB_NO_SUDO" ]; then exit 1; fi; shift; exec "$@"'
K3S = 'echo "read $(cat)" >> "$(dirname "$0")/../calls.log"'


@pytest.mark.parametrize("uid", ["0", "1000"], ids=["root", "passwordless-sudo"])
def test_k3s_import_streams_the_image_into_the_node_s_containerd_as_root(tmp_path: Path, uid: str) -> None:
    environment, log = stub_tools(
        tmp_path,
        {"docker": "printf archive", "id": USER_ID, "sudo": SUDO, "k3s": K3S, "hostname": "echo gpu-1"},
    )
    variables = {"IMAGE": "trainstack/trainer:t1", "NODE_IMPORT": K3S_NODE_IMPORT_SCRIPT, "STUB_UID": uid}
    result = run_file("trainer_image_k3s_import.sh", {**environment, **variables, "STUB_NO_SUDO": ""})
    assert result.stderr == ""
    calls = log.read_text().splitlines()
    # docker save and the import run side by side (a pipe): their log lines may interleave.
    assert [call for call in calls if call.startswith("docker")] == ["docker save trainstack/trainer:t1"]
    node = [call for call in calls if not call.startswith(("docker", "id ", "hostname"))]
    import_call = "k3s ctr -n k8s.io images import -"
    via_sudo = ["sudo -n true", f"sudo -n {import_call}"] if uid != "0" else []
    assert node == [*via_sudo, import_call, "read archive"]


def test_k3s_import_without_passwordless_sudo_stops_with_one_clear_error(tmp_path: Path) -> None:
    environment, log = stub_tools(
        tmp_path,
        {"docker": "printf archive", "id": USER_ID, "sudo": SUDO, "k3s": K3S, "hostname": "echo gpu-1"},
    )
    variables = {"IMAGE": "trainstack/trainer:t1", "NODE_IMPORT": K3S_NODE_IMPORT_SCRIPT, "STUB_NO_SUDO": "1"}
    result = run_file("trainer_image_k3s_import.sh", {**environment, **variables}, check=False)
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1
    assert (
        "trainstack: importing the image into k3s needs passwordless sudo: user ops on gpu-1" in result.stderr
    )
    assert not [call for call in log.read_text().splitlines() if call.startswith("k3s")]


def test_k3s_remote_import_streams_over_ssh_to_every_node(context: Path, tmp_path: Path) -> None:
    key = context / "key file"
    hosts = RemoteHosts("192.0.2.1", ("192.0.2.2",), "ops", 2222, key)
    run = evaluate(lambda: TrainerImage("image", args(context, delivery=K3sImport(hosts))))
    commands = sorted((r for r in run.of_type(COMMAND) if r.name != "image-untag"), key=lambda r: r.name)
    assert [c.name for c in commands] == ["image-k3s-import-0", "image-k3s-import-1"]
    for command, host in zip(commands, ("192.0.2.1", "192.0.2.2"), strict=True):
        # One script for every node: the login comes as environment variables, never as script text.
        assert command.inputs["create"] == K3S_IMPORT_SCRIPT
        assert command.inputs["environment"] == {
            "IMAGE": run.one(IMAGE).inputs["imageName"],
            "NODE_IMPORT": K3S_NODE_IMPORT_SCRIPT,
            "SSH_USER": "ops",
            "SSH_PORT": "2222",
            "SSH_KEY": str(key),
            "SSH_HOST": host,
        }
        assert not contains_secret(command.inputs["environment"])
    # ssh logs each argument on a line, then runs the remote command on what it reads, as the node would.
    environment, log = stub_tools(
        tmp_path,
        {
            "docker": "printf archive",
            "ssh": 'for arg in "$@"; do echo "arg $arg"; done >> "$(dirname "$0")/../ssh.log"; eval "${10}"',
            "id": "echo 0",
            "k3s": K3S,
        },
    )
    variables = dict(commands[1].inputs["environment"])
    run_file("trainer_image_k3s_import.sh", {**environment, **variables})
    arguments = (tmp_path / "ssh.log").read_text().removeprefix("arg ").split("\narg ")
    assert arguments == [
        "-o",
        "BatchMode=yes",
        "-o",
        "StrictHostKeyChecking=accept-new",
        "-i",
        str(key),
        "-p",
        "2222",
        "ops@192.0.2.2",
        K3S_NODE_IMPORT_SCRIPT + "\n",
    ]
    node = [call for call in log.read_text().splitlines() if call.startswith(("k3s", "read"))]
    assert node == ["k3s ctr -n k8s.io images import -", "read archive"]
