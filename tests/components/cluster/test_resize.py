"""Issue 23, case 2: growing (or shrinking) a cluster never removes its checkpoints.

pulumi-command replaces a command when an input its provider tags `replaceOnChanges` changes, running the old
`delete` first (deleteBeforeReplace); any other change is an update that runs `update` (or `create` again)
and no `delete`; a command the program no longer declares is deleted. The rule is read from pulumi-command
v1.2.1's own source (tests/upstream/pulumi-command/inputs.go). For each kind that provides shared storage,
the program is evaluated before and after a resize, the rule says which old `delete` scripts run, and those
scripts run for real against stub tools: none may remove the shared checkpoint storage.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from components.cluster import Cluster
from components.cluster.kind import kind_shared_directory
from components.cluster.provider import SHARED_STORAGE_PATH, ClusterArgs, DockerNodes, RemoteHosts
from tests.components.cluster.stubs import POSIX_SH, ROOT_ID, calls, run, stub_tools
from tests.support.stack_helpers import Registration, evaluate, reveal

UPSTREAM = Path(__file__).resolve().parents[2] / "upstream" / "pulumi-command" / "inputs.go"
COMMAND_TYPES = ("command:local:Command", "command:remote:Command")


def replace_on_changes_fields() -> set[str]:
    """The command inputs whose change replaces the command, as pulumi-command v1.2.1 tags them."""
    tagged = re.findall(
        r'`pulumi:"(\w+)[^"]*"\s+provider:"[^"]*replaceOnChanges[^"]*"`', UPSTREAM.read_text()
    )
    return set(tagged)


def test_the_upstream_rule_is_read_from_its_source() -> None:
    # Triggers alone replace; create, update, delete, environment and the connection are updates.
    assert replace_on_changes_fields() == {"triggers"}


def deletes_run_by(before: list[Registration], after: list[Registration]) -> list[Registration]:
    """The commands of `before` whose `delete` the engine runs on the way to `after`: gone, or replaced."""
    fields = replace_on_changes_fields()
    new = {r.name: r for r in after if r.type in COMMAND_TYPES}
    deleted = []
    for old in (r for r in before if r.type in COMMAND_TYPES):
        other = new.get(old.name)
        if other is None or any(
            reveal(old.inputs.get(field)) != reveal(other.inputs.get(field)) for field in fields
        ):
            deleted.append(old)
    return deleted


# Stub tools that only log: docker lists the cluster's labelled volumes, the shared one among them.
STUBS = {
    "docker": """case "$1 $2" in
  "volume ls") printf 'demo-server-data\\ndemo-agent-1-data\\ndemo-shared\\n' ;;
  "volume inspect") exit 0 ;;
esac""",
    "kind": "exit 0",
    "rm": "exit 0",
    "sed": "exit 0",
    "exportfs": "exit 0",
    "umount": "exit 0",
    "mountpoint": "exit 0",
    "id": ROOT_ID,
}


def removes_shared_storage(log: list[str], shared_dir: str) -> list[str]:
    """The logged calls that would remove the shared checkpoint volume or directory."""
    return [
        call
        for call in log
        if (call.startswith("docker volume rm") and "demo-shared" in call.split())
        or (call.startswith("rm ") and (shared_dir in call.split() or SHARED_STORAGE_PATH in call.split()))
    ]


def key(tmp_path: Path) -> Path:
    path = tmp_path / "id"
    path.write_text("PRIVATE KEY")
    return path


def kind(nodes: int, tmp_path: Path) -> ClusterArgs:
    return ClusterArgs("kind", "demo", nodes, 0, "kindest/node:v1.33.1", "v1.33.6+k3s1", shared_storage=True)


def docker(nodes: int, tmp_path: Path) -> ClusterArgs:
    return replace(kind(nodes, tmp_path), kind="k3s", docker=DockerNodes("rancher/k3s:v1.33.6-k3s1"))


def remote(nodes: int, tmp_path: Path) -> ClusterArgs:
    agents = tuple(f"192.0.2.{index + 2}" for index in range(nodes - 1))
    return replace(
        kind(nodes, tmp_path), kind="k3s", remote=RemoteHosts("192.0.2.1", agents, "ops", 22, key(tmp_path))
    )


KINDS: dict[str, Callable[[int, Path], ClusterArgs]] = {
    "kind": kind,
    "k3s-docker": docker,
    "k3s-remote": remote,
}


@pytest.mark.parametrize("name", KINDS)
@pytest.mark.parametrize(("before", "after"), [(2, 3), (1, 2), (3, 2)])
def test_a_resize_never_runs_a_delete_that_removes_the_checkpoints(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str, before: int, after: int
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))  # kind's shared directory is under the user's home
    make = KINDS[name]
    old = evaluate(lambda: Cluster("c", make(before, tmp_path))).resources
    new = evaluate(lambda: Cluster("c", make(after, tmp_path))).resources
    deleted = deletes_run_by(old, new)
    if name != "k3s-remote":
        assert deleted, "a resize of the nodes replaces the command that makes them"
    environment, log = stub_tools(tmp_path, STUBS)
    for command in (c for c in deleted if c.inputs.get("delete")):
        variables: dict[str, Any] = reveal(command.inputs.get("environment")) or {}
        interpreter = POSIX_SH if command.type == "command:remote:Command" else command.inputs["interpreter"]
        result = run(command.inputs["delete"], {**environment, **variables}, interpreter=interpreter)
        assert result.returncode == 0, (command.name, result.stderr)
    shared_dir = str(kind_shared_directory("demo"))
    assert removes_shared_storage(calls(log), shared_dir) == [], [c.name for c in deleted]


@pytest.mark.parametrize("name", KINDS)
def test_destroy_still_removes_the_shared_storage(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str
) -> None:
    """Every command's delete runs at destroy: the shared storage goes then, and only then."""
    monkeypatch.setenv("HOME", str(tmp_path))
    everything = evaluate(lambda: Cluster("c", KINDS[name](2, tmp_path))).resources
    environment, log = stub_tools(tmp_path, STUBS)
    for command in (c for c in deletes_run_by(everything, []) if c.inputs.get("delete")):
        variables: dict[str, Any] = reveal(command.inputs.get("environment")) or {}
        interpreter = POSIX_SH if command.type == "command:remote:Command" else command.inputs["interpreter"]
        result = run(command.inputs["delete"], {**environment, **variables}, interpreter=interpreter)
        assert result.returncode == 0, (command.name, result.stderr)
    assert removes_shared_storage(calls(log), str(kind_shared_directory("demo")))
