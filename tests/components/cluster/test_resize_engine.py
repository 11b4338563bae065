"""Issue 23, case 2 under the real engine: the pinned Pulumi CLI and pulumi-command v1.2.1 provider (built by
`make e2e-toolchain`) resize a kind cluster of the stack's own kind.py, with a stub `kind`, and the checkpoint
in the shared directory survives the replacement of the cluster; destroy removes it.

Skipped when the toolchain has not built the CLI and the command provider yet.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from tests.e2e.harness import CACHE, REPO_ROOT

BIN = CACHE / "bin"
NEEDED = ("pulumi", "pulumi-language-python", "pulumi-resource-command")

PROGRAM = """import os, sys
sys.path.insert(0, os.environ["TRAINSTACK_REPO"])
import pulumi
from components.cluster.kind import Kind
from components.cluster.provider import ClusterArgs


class Holder(pulumi.ComponentResource):
    def __init__(self) -> None:
        super().__init__("trainstack:index:Cluster", "cluster")


args = ClusterArgs("kind", "demo", int(pulumi.Config().require("nodes")), 0, "kindest/node:test", "v1",
                   shared_storage=True)
provisioned = Kind(args).provision("cluster", Holder())
pulumi.export("kubeconfig", provisioned.kubeconfig)
"""

# kind: clusters listed from a state file; create adds, delete removes; every call logged.
STUB_KIND = """#!/bin/sh
echo "kind $*" >> "$STUB_LOG"
state="$STUB_STATE"
touch "$state"
case "$1 $2" in
  "get clusters") cat "$state" ;;
  "create cluster") cat > /dev/null; echo "$4" >> "$state" ;;
  "get kubeconfig") echo "kubeconfig of $4" ;;
  "delete cluster") grep -vx "$4" "$state" > "$state.new" || true; mv "$state.new" "$state" ;;
esac
"""


@pytest.mark.slow
@pytest.mark.skipif(
    not all((BIN / name).exists() for name in NEEDED),
    reason="the toolchain's Pulumi CLI and command provider",
)
def test_a_real_resize_replaces_the_cluster_and_keeps_the_checkpoints(tmp_path: Path) -> None:
    project = tmp_path / "project"
    project.mkdir()
    (project / "__main__.py").write_text(PROGRAM)
    (project / "Pulumi.yaml").write_text(
        "name: resize\nruntime:\n  name: python\n  options:\n"
        f"    toolchain: pip\n    virtualenv: {REPO_ROOT / '.venv'}\n"
    )
    stubs = tmp_path / "stubs"
    stubs.mkdir()
    (stubs / "kind").write_text(STUB_KIND)
    (stubs / "kind").chmod(0o755)
    (tmp_path / "state").mkdir()
    log = tmp_path / "kind.log"
    environment = {
        **os.environ,
        "PATH": f"{stubs}:{BIN}:{os.environ['PATH']}",
        "HOME": str(tmp_path),
        "PULUMI_HOME": str(tmp_path / "pulumi-home"),
        "PULUMI_BACKEND_URL": f"file://{tmp_path / 'state'}",
        "PULUMI_CONFIG_PASSPHRASE": "test",
        "PULUMI_DISABLE_AUTOMATIC_PLUGIN_ACQUISITION": "1",
        "PULUMI_SKIP_UPDATE_CHECK": "1",
        "NO_COLOR": "1",
        "TRAINSTACK_REPO": str(REPO_ROOT),
        "STUB_LOG": str(log),
        "STUB_STATE": str(tmp_path / "kind-clusters"),
    }

    def pulumi(*args: str) -> str:
        result = subprocess.run(
            ["pulumi", *args, "--non-interactive"],
            cwd=project,
            env=environment,
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
        return result.stdout

    pulumi("stack", "init", "test")
    pulumi("config", "set", "nodes", "2")
    pulumi("up", "--yes", "--skip-preview")
    shared = tmp_path / ".local" / "share" / "trainstack" / "demo" / "shared"
    checkpoint = shared / "gpt" / "checkpoints" / "step_20" / "manifest.json"
    checkpoint.parent.mkdir(parents=True)
    checkpoint.write_text("{}")
    log.write_text("")

    pulumi("config", "set", "nodes", "3")
    up = pulumi("up", "--yes", "--skip-preview")
    kind_calls = log.read_text().splitlines()
    # The engine replaced the cluster (the old delete first), as pulumi-command's triggers say ...
    assert any(call.startswith("kind delete cluster --name demo") for call in kind_calls), up
    assert any(call.startswith("kind create cluster --name demo") for call in kind_calls), up
    # ... and the checkpoint is still there for the resized job.
    assert checkpoint.read_text() == "{}"

    pulumi("destroy", "--yes", "--skip-preview")
    assert not shared.exists()
