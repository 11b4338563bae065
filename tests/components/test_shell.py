"""The shared shell helpers: quoting, and kubectl commands that carry the kubeconfig as a secret."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pulumi
import pytest

from components.shell import BASH, COMPONENTS_DIR, KUBECONFIG_PRELUDE, assign, kubectl_command, script
from tests.support.stack_helpers import contains_secret, evaluate


def test_assign_quotes_for_the_shell() -> None:
    assert assign("NAME", "plain") == "NAME=plain"
    assert assign("NAME", "it's; rm -rf /") == "NAME='it'\"'\"'s; rm -rf /'"
    result = subprocess.run(
        ["bash", "-c", assign("X", "a b'c") + '\nprintf %s "$X"'], capture_output=True, text=True, check=True
    )
    assert result.stdout == "a b'c"


def test_kubectl_command_writes_the_kubeconfig_to_a_private_temporary_file(tmp_path: Path) -> None:
    seen = tmp_path / "seen"

    def program() -> None:
        kubectl_command(
            "probe",
            kubeconfig=pulumi.Output.secret("apiVersion: v1"),
            script='test "$(cat "$KUBECONFIG")" = "$EXPECTED"\nstat -c "%a $KUBECONFIG" "$KUBECONFIG" > "$SEEN"\n',
            environment={"EXTRA": "1"},
            triggers=["t"],
            opts=pulumi.ResourceOptions(),
        )

    command = evaluate(program).one("command:local:Command")
    assert command.inputs["interpreter"] == BASH
    assert command.inputs["create"].startswith(KUBECONFIG_PRELUDE)
    assert script("kubeconfig.sh") == KUBECONFIG_PRELUDE
    assert contains_secret(command.inputs["environment"])
    assert "apiVersion: v1" not in command.inputs["create"]
    # The script itself works: run it the way the provider would.
    env = {
        "TRAINSTACK_KUBECONFIG": "apiVersion: v1",
        "EXPECTED": "apiVersion: v1",
        "SEEN": str(seen),
        "PATH": "/usr/bin:/bin",
    }
    assert subprocess.run([*BASH, command.inputs["create"]], env=env, check=False).returncode == 0
    # Readable by this user only, and gone when the command ends.
    mode, path = seen.read_text().split()
    assert mode == "600" and not Path(path).exists()


def test_script_joins_the_named_files_in_order() -> None:
    assert script("kubeconfig.sh", "root.sh") == (
        (COMPONENTS_DIR / "kubeconfig.sh").read_text() + (COMPONENTS_DIR / "root.sh").read_text()
    )
    with pytest.raises(FileNotFoundError):
        script("no-such-script.sh")
