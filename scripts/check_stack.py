#!/usr/bin/env python3
"""Check a stack file without the Pulumi CLI or a cluster: `make check STACK=gpu`.

    .venv/bin/python scripts/check_stack.py gpu     # reads Pulumi.gpu.yaml with Pulumi.yaml's defaults

Every value goes through the program's own validation (components.stack.parse_settings), so what passes
here passes `pulumi up`'s own check. Each problem is one line, exit 2; else "ok" and the plan: the cluster,
nodes x GPUs, what will be installed. parse_settings stops at the first bad value: this puts that key back to
its default and checks again, so every bad key is named (a second complaint about a key already named is left
out, since it comes from the default that stood in). Not checked here: an existing cluster's API server
(needs the network; `pulumi up` asks it first) and encrypted secrets (only Pulumi can read them).
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path
from typing import Any

import yaml

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

# The repository root first, as Pulumi runs __main__.py.
from components.settings import (  # noqa: E402
    KUBECONFIG_NOT_SECRET,
    PROJECT,
    SECRET_KEYS,
    StackConfigError,
    declared_keys,
)
from components.stack import StackSettings, parse_settings  # noqa: E402
from components.training_job_config import BUNDLED_DATA, HF_SCHEME  # noqa: E402

USAGE_EXIT_CODE = 2


class PulumiYamlLoader(yaml.SafeLoader):
    """A stack file as Pulumi reads it (YAML 1.2, go-yaml v3): true and false only are booleans (yes, no, on and
    off stay strings, which `up` refuses for a boolean key), and a key twice in a mapping is an error.
    upstream: pulumi/pulumi sdk/go/common/encoding/marshal.go @ v3.259.0 (gopkg.in/yaml.v3)
    upstream: go-yaml/yaml decode.go d.mapping ("mapping key %#v already defined at line %d") @ v3.0.1"""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if isinstance(key, str) and key in seen:
                problem = f"mapping key {key!r} already defined at line {seen[key] + 1}"
                raise yaml.constructor.ConstructorError(None, None, problem, key_node.start_mark)
            seen[key] = key_node.start_mark.line
        return super().construct_mapping(node, deep)


PulumiYamlLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:bool"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
PulumiYamlLoader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)


def read_stack_file(path: Path) -> tuple[dict[str, Any], list[str], list[str]]:
    """(plain values without the project prefix, secret keys it holds, problems with the file itself; main
    puts the file's name before each)."""
    try:
        document = yaml.load(path.read_text(), Loader=PulumiYamlLoader) or {}
    except OSError as error:
        return {}, [], [f"cannot be read: {error.strerror}"]
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
        problem = getattr(error, "problem", None) or str(error).splitlines()[0]
        return {}, [], [f"not valid YAML: {where}{problem}"]
    config = document.get("config") or {} if isinstance(document, dict) else None
    if not isinstance(config, dict):
        return {}, [], [f"expected a `config:` mapping of {PROJECT}:KEY: VALUE"]
    values: dict[str, Any] = {}
    secrets: list[str] = []
    problems: list[str] = []
    for full_key, value in config.items():
        project, _, key = str(full_key).partition(":")
        if project != PROJECT or not key:
            problems.append(f"{full_key}: not a {PROJECT}:KEY setting")
        elif isinstance(value, dict) and "secure" in value:
            secrets.append(key)  # encrypted: only Pulumi can read it
        else:
            values[key] = value
    return values, secrets, problems


def key_of(error: StackConfigError) -> str:
    """The stack key a parse_settings error names ("trainstack:KEY: problem")."""
    return str(error).removeprefix(f"{PROJECT}:").split(":", 1)[0]


def _stand_in_named(problem: str, key: str, values: dict[str, Any], named: set[str]) -> str:
    """An override is checked against the default preset once trainingPreset was found bad: say so, rather
    than seem to name the preset in use."""
    if key == "trainingOverrides" and "trainingPreset" in named:
        default = declared_keys()["trainingPreset"].default
        return problem.replace(
            f"for preset {default!r}",
            f"for the default preset {default!r} (standing in for trainingPreset {values.get('trainingPreset')!r})",
        )
    return problem


def _follows_stand_in(problem: str, named: set[str]) -> bool:
    """A rule between keys that names one already found bad judges its default, not the stack's value (e.g.
    nodeCount against the hosts once k3sAgentHosts was refused): not the stack's problem, so not shown."""
    body = problem.removeprefix(f"{PROJECT}:").split(":", 1)[-1]
    if "unknown key" in body:  # its list of allowed keys names them all
        return False
    return any(re.search(rf"\b{re.escape(key)}\b", body) for key in named)


def check(values: dict[str, Any], secrets: list[str]) -> tuple[StackSettings | None, list[str]]:
    """The settings (None when a problem remains) and every problem, one line each."""
    remaining = dict(values)
    named: set[str] = set()
    problems: list[str] = []
    if "kubeconfig" in remaining:  # in plaintext: `pulumi up` (load_settings) refuses it before anything else
        problems.append(f"{PROJECT}:kubeconfig: {KUBECONFIG_NOT_SECRET}")
        del remaining["kubeconfig"]
        named.add("kubeconfig")
        secrets = [*secrets, "kubeconfig"]
    while True:
        try:
            settings = parse_settings(remaining, ask_api_server=False)
        except StackConfigError as error:
            key = key_of(error)
            if (
                key in {"kubeconfig", "kubeconfigPath"}
                and "kubeconfig" in secrets
                and "kubeconfigPath" not in remaining
            ):
                return None, problems  # the secret is what the cluster is read from: not checkable here
            if key not in named and not _follows_stand_in(str(error), named):
                problems.append(_stand_in_named(str(error), key, values, named))
            named.add(key)
            if key not in remaining:  # a default (or a combination of defaults) is the problem: stop here
                return None, problems
            del remaining[key]
            continue
        return (None if problems else settings), problems


def data_source(path: str) -> str:
    """Where the job's corpus comes from (dataSource), as the pods will read it."""
    if path.rstrip("/") == BUNDLED_DATA:
        return f"{path} (the bundled Shakespeare sample, in the image)"
    if path.startswith("s3://"):
        return f"{path} (the checkpoint object store)"
    if path.startswith(HF_SCHEME):
        return f"{path} (a Hugging Face dataset, downloaded by the job)"
    return f"{path} (inside the pods: the checkpoint volume or the image)"


def plan(settings: StackSettings) -> list[str]:
    """What `pulumi up` would create, in a few lines."""
    cluster, job, image = settings.cluster, settings.job, settings.image
    if cluster.kind == "kind":
        where = f"kind cluster {cluster.name!r} (Docker containers on this machine)"
    elif cluster.kind == "existing":
        where = f"your cluster (context {cluster.existing.context!r})" if cluster.existing else "your cluster"
    elif cluster.docker is not None:
        where = f"k3s {cluster.k3s_version} in Docker containers ({cluster.name!r})"
    elif cluster.remote is not None:
        where = f"k3s {cluster.k3s_version} over SSH on {cluster.remote.server}" + (
            f" and {len(cluster.remote.agents)} agent host(s)" if cluster.remote.agents else ""
        )
    else:
        where = f"k3s {cluster.k3s_version} on this machine"
    gpus = f"{cluster.gpus_per_node} GPU(s)" if cluster.gpus_per_node else "no GPU (CPU training)"
    config = yaml.safe_load(job.train_config)
    installs = []
    if settings.gpu is not None:
        installs.append(settings.gpu.summary)
    installs.append(f"Kubeflow Trainer {settings.trainer.version}")
    delivery = "pushed to the registry" if image.push else "loaded into the nodes"
    installs.append(f"the trainer image {image.repository} (built here, {delivery})")
    if settings.mlflow_server is not None:
        installs.append("an MLflow tracking server")
    if settings.monitoring is not None:
        installs.append(
            f"/metrics on port {settings.monitoring.port}"
            + (" with a PodMonitor" if settings.monitoring.pod_monitor else "")
        )
    return [
        f"cluster: {where}",
        f"training: {cluster.node_count} node(s) x {gpus}, TrainJob {job.job_name!r}, "
        f"model {config['model']['preset']}, {config['train']['max_steps']} steps, "
        f"checkpoints in {config['checkpoint']['dir']}",
        f"data: {data_source(config['data']['path'])}",
        f"installs: {', '.join(installs)}",
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Check Pulumi.STACK.yaml without the Pulumi CLI or a cluster."
    )
    parser.add_argument(
        "stack", help="the stack name: Pulumi.STACK.yaml is read (with Pulumi.yaml's defaults)"
    )
    args = parser.parse_args(argv)
    path = REPO_ROOT / f"Pulumi.{args.stack}.yaml"
    if not path.is_file():
        stacks = sorted(p.name.split(".")[1] for p in REPO_ROOT.glob("Pulumi.*.yaml"))
        print(f"error: no stack file {path.name}: STACK must be one of {', '.join(stacks)}", file=sys.stderr)
        return USAGE_EXIT_CODE
    values, secrets, problems = read_stack_file(path)
    settings = None
    if not problems:
        settings, problems = check(values, secrets)
    for problem in problems:
        print(f"{path.name}: {problem}", file=sys.stderr)
    if problems:
        return USAGE_EXIT_CODE
    print(f"ok: {path.name}")
    if settings is None:
        print(
            "not checked: the cluster settings, read from the encrypted kubeconfig secret (pulumi up reads it)"
        )
        return 0
    for line in plan(settings):
        print(f"  {line}")
    unread = sorted(set(secrets) - {"kubeconfig"} & set(SECRET_KEYS))
    if unread:
        print(f"  not checked: the encrypted secret(s) {', '.join(unread)}")
    if settings.cluster.existing is not None:
        print("  not checked: that the API server answers (needs the network; pulumi up asks it first)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
