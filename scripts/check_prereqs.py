#!/usr/bin/env python3
"""Check the tools a make target needs before it changes anything; say what is missing and how to get it.

    python3 scripts/check_prereqs.py pulumi docker kind   # exit 0 when all are usable, 1 otherwise
    python3 scripts/check_prereqs.py --stack dev pulumi docker kubectl   # plus what the stack's cluster kind needs
    python3 scripts/check_prereqs.py python   # only: is the Python running this one trainstack supports

`python` checks the interpreter running this script (the Makefile's $(PYTHON)), before any virtualenv is made.

Standard library only: it runs before the virtualenv exists (so a stack file is read for its one
`trainstack:clusterKind:` line, not parsed as YAML).
"""

from __future__ import annotations

import argparse
import io
import os
import re
import shutil
import subprocess
import sys
import tarfile
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # python_check.py, also when loaded from its file
from python_check import python_problem  # parses on any Python: the Makefile runs it first

PROBE_TIMEOUT_S = 20


@dataclass(frozen=True)
class Tool:
    probe: tuple[str, ...]  # a command that exits 0 only when the tool is usable
    purpose: str
    how_to_get: str


TOOLS = {
    "pulumi": Tool(
        ("pulumi", "version"),
        "the Pulumi CLI deploys and destroys the stack",
        "curl -fsSL https://get.pulumi.com | sh  (then open a new shell; https://www.pulumi.com/docs/iac/download-install/)",
    ),
    "docker": Tool(
        ("docker", "info", "--format", "{{.ServerVersion}}"),
        "a running Docker engine builds the trainer image and hosts the kind cluster's nodes",
        "https://docs.docker.com/engine/install/ (Debian/Ubuntu: apt-get install docker.io), then start it "
        "(systemctl start docker, or dockerd & where there is no systemd) and make sure `docker info` works",
    ),
    "kind": Tool(
        ("kind", "version"),
        "kind creates the local Kubernetes cluster (clusterKind: kind, the default)",
        "go install sigs.k8s.io/kind@v0.29.0, or a release binary: https://kind.sigs.k8s.io/docs/user/quick-start/#installation",
    ),
    "kubectl": Tool(
        ("kubectl", "version", "--client"),
        "the stack's readiness checks run kubectl, and it is how you watch the job's pods and logs",
        "https://kubernetes.io/docs/tasks/tools/",
    ),
}


# The Pythons the pins install on: SQLAlchemy 2.1.9, numpy, pillow (matplotlib) and others need >= 3.11;
# triton (torch's, on Linux) < 3.15.
REPO_ROOT = Path(__file__).resolve().parent.parent
# clusterKind's default in Pulumi.yaml.
DEFAULT_CLUSTER_KIND = "kind"
# Tools a cluster kind needs on this machine beyond the ones every stack needs.
KIND_TOOLS = {"kind": ["kind"]}


def stack_files() -> list[str]:
    return sorted(path.name.split(".")[1] for path in REPO_ROOT.glob("Pulumi.*.yaml"))


def stack_setting(stack: str, key: str, default: str) -> str:
    """trainstack:<key> from Pulumi.<stack>.yaml (the default when the file or the key is absent)."""
    path = REPO_ROOT / f"Pulumi.{stack}.yaml"
    if not path.is_file():
        return default
    match = re.search(rf"^\s*trainstack:{key}:\s*[\"']?([A-Za-z0-9-]+)", path.read_text(), flags=re.M)
    return match[1] if match else default


def cluster_kind(stack: str) -> str:
    """The stack's clusterKind from Pulumi.<stack>.yaml (Pulumi.yaml's default when it sets none)."""
    return stack_setting(stack, "clusterKind", DEFAULT_CLUSTER_KIND)


def problem_with(tool: Tool) -> str | None:
    """Why the tool is not usable here, or None."""
    executable = tool.probe[0]
    if shutil.which(executable) is None:
        return f"`{executable}` is not on PATH"
    try:
        probe = subprocess.run(tool.probe, capture_output=True, text=True, timeout=PROBE_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        return f"`{' '.join(tool.probe)}` did not answer within {PROBE_TIMEOUT_S} s"
    if probe.returncode != 0:
        detail = (probe.stderr or probe.stdout).strip().splitlines()
        return f"`{' '.join(tool.probe)}` failed: {detail[-1] if detail else f'exit {probe.returncode}'}"
    return None


# kind's nodes and k3s-in-Docker's are containers Docker starts with --privileged. An engine that itself lacks
# a capability (e.g. one running inside an unprivileged container) answers `docker info` but refuses them.
PRIVILEGED_DOCKER = Tool(
    (),
    "kind's nodes (and k3s-in-Docker's) are containers Docker starts with --privileged",
    "run Docker on a host or VM whose engine holds every capability (not inside a container that lacks some), "
    "or train on a cluster you already have: make up STACK=existing (clusterKind existing, Pulumi.existing.yaml)",
)
# A command the probe's empty image does not have: exit 127 (not found) means the runtime had applied the
# privileged settings and got as far as looking for it; a refusal of those settings fails earlier (125).
PRIVILEGED_PROBE_EXIT = 127


def runs_privileged_nodes(stack: str) -> bool:
    """Whether the stack's cluster runs its nodes as privileged containers on this machine's Docker."""
    kind = cluster_kind(stack)
    return kind == "kind" or (kind == "k3s" and stack_setting(stack, "k3sMode", "local") == "docker")


def privileged_problem() -> str | None:
    """Why this Docker cannot start a privileged container, or None: a second's probe with an empty image
    imported from an empty tar (nothing pulled), removed again afterwards."""
    tag = f"trainstack-privileged-probe:{os.getpid()}"
    empty_tar = io.BytesIO()
    tarfile.open(fileobj=empty_tar, mode="w").close()
    imported = subprocess.run(
        ["docker", "import", "-", tag],
        input=empty_tar.getvalue(),
        capture_output=True,
        timeout=PROBE_TIMEOUT_S,
    )
    if imported.returncode != 0:
        return f"`docker import` of an empty probe image failed: {last_line(imported.stderr.decode())}"
    try:
        probe = subprocess.run(
            ["docker", "run", "--rm", "--privileged", "--network", "none", tag, "/absent"],
            capture_output=True,
            text=True,
            timeout=PROBE_TIMEOUT_S,
        )
    finally:
        subprocess.run(["docker", "image", "rm", tag], capture_output=True, timeout=PROBE_TIMEOUT_S)
    if probe.returncode == PRIVILEGED_PROBE_EXIT:
        return None
    return f"this Docker cannot start a privileged container: `docker run --privileged` failed: {last_line(probe.stderr)}"


def last_line(output: str) -> str:
    """The error line of a docker client's stderr (it ends with a 'Run docker ... --help' hint)."""
    lines = [line for line in output.strip().splitlines() if line.strip() and "--help" not in line]
    return lines[-1].strip() if lines else "no message"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Check that the named tools are installed and usable.")
    parser.add_argument(
        "tools",
        nargs="+",
        choices=["python", *sorted(TOOLS)],
        metavar="TOOL",
        help=f"python (this interpreter's version) or one of {', '.join(TOOLS)}",
    )
    parser.add_argument(
        "--stack", help="also the tools this stack's cluster kind needs (kind for clusterKind kind)"
    )
    args = parser.parse_args(argv)
    names = list(args.tools)
    if "python" in names:
        problem = python_problem()
        if problem is not None:  # one line, before anything else is looked at or downloaded
            print(f"error: {problem}")
            return 1
        names.remove("python")
        print(f"ok       python {'.'.join(str(part) for part in sys.version_info[:3])}")
    if args.stack and not (REPO_ROOT / f"Pulumi.{args.stack}.yaml").is_file():
        print(
            f"error: no stack file Pulumi.{args.stack}.yaml: STACK must be one of {', '.join(stack_files())}"
            f" (or add Pulumi.{args.stack}.yaml; Pulumi.yaml lists every setting)"
        )
        return 1
    if args.stack:
        names += [tool for tool in KIND_TOOLS.get(cluster_kind(args.stack), []) if tool not in names]
    missing = 0
    for name in names:
        tool = TOOLS[name]
        problem = problem_with(tool)
        if problem is None and name == "docker" and args.stack and runs_privileged_nodes(args.stack):
            problem, tool = privileged_problem(), PRIVILEGED_DOCKER
        if problem is None:
            print(f"ok       {name}")
            continue
        missing += 1
        print(
            f"MISSING  {name}: {problem}\n         needed because {tool.purpose}\n         get it: {tool.how_to_get}"
        )
    if missing:
        print(
            f"\n{missing} prerequisite(s) missing: nothing was changed. Install them and run the command again."
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
