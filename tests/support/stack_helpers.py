"""Runs the Pulumi program (or one component) under the SDK's mock engine and records the resource graph.

Nothing reaches a cluster, Docker or SSH: a Mocks subclass answers every registration with its inputs plus
the few outputs the program reads (the kubeconfig a cluster command prints, the image's digest, pod names).
"""

from __future__ import annotations

import hashlib
import json
import runpy
import subprocess
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pulumi
import yaml
from pulumi.runtime import mocks, rpc
from pulumi.runtime import settings as runtime_settings
from pulumi.runtime.stack import run_in_stack
from pulumi.runtime.sync_await import _sync_await

REPO_ROOT = Path(__file__).resolve().parents[2]
PROJECT = "trainstack"
# The stack outputs users rely on (README's contract), under the mock engine and the real one alike.
STACK_OUTPUTS = (
    "kubeconfig",
    "clusterName",
    "namespace",
    "trainJobName",
    "podNames",
    "checkpointLocation",
    "image",
    "logsCommand",
)
SECRET_SIGNATURE = rpc._special_sig_key
SECRET_VALUE = rpc._special_secret_sig

FAKE_KUBECONFIG = """apiVersion: v1
kind: Config
clusters:
- name: default
  cluster:
    server: https://127.0.0.1:6443
    certificate-authority-data: Y2E=
contexts:
- name: default
  context: {cluster: default, user: default}
current-context: default
users:
- name: default
  user: {token: fake-token}
"""


def stack_files() -> list[Path]:
    """Every Pulumi.<stack>.yaml the repository tracks: not a user's own stack (`pulumi stack init` writes one
    beside them, perhaps with secrets under another passphrase). Outside a git checkout, or in an untracked copy
    of one (mutmut's, under runs/mutation/), every one there."""
    listed = subprocess.run(
        ["git", "ls-files", "Pulumi.*.yaml"], cwd=REPO_ROOT, capture_output=True, text=True, check=False
    )
    if listed.returncode or not listed.stdout.split():
        return sorted(REPO_ROOT.glob("Pulumi.*.yaml"))
    return sorted(REPO_ROOT / name for name in listed.stdout.split())


def stack_name(path: Path) -> str:
    return path.name[len("Pulumi.") : -len(".yaml")]


def is_secret(value: Any) -> bool:
    return isinstance(value, dict) and value.get(SECRET_SIGNATURE) == SECRET_VALUE


def contains_secret(value: Any) -> bool:
    """Whether a serialized value is, or holds, a Pulumi secret."""
    if is_secret(value):
        return True
    if isinstance(value, dict):
        return any(contains_secret(item) for item in value.values())
    if isinstance(value, list):
        return any(contains_secret(item) for item in value)
    return False


def without_secrets(value: Any) -> Any:
    """A serialized value with every secret replaced by "[secret]" (what a plaintext search must not see past)."""
    if is_secret(value):
        return "[secret]"
    if isinstance(value, dict):
        return {key: without_secrets(item) for key, item in value.items()}
    if isinstance(value, list):
        return [without_secrets(item) for item in value]
    return value


def reveal(value: Any) -> Any:
    """A serialized value with every secret replaced by its plaintext."""
    if is_secret(value):
        return reveal(value["value"])
    if isinstance(value, dict):
        return {key: reveal(item) for key, item in value.items()}
    if isinstance(value, list):
        return [reveal(item) for item in value]
    return value


@dataclass
class Registration:
    """One registered resource as the engine saw it."""

    urn: str
    type: str
    name: str
    parent: str
    provider: str
    dependencies: list[str]
    custom: bool
    inputs: dict[str, Any]
    replace_on_changes: list[str] = field(default_factory=list)
    delete_before_replace: bool = False
    additional_secret_outputs: list[str] = field(default_factory=list)
    # The customTimeouts option (create, update, delete as Go durations; "" when not set).
    custom_timeouts: dict[str, str] = field(default_factory=dict)

    @property
    def plain(self) -> dict[str, Any]:
        """The inputs with secrets revealed."""
        return reveal(self.inputs)


@dataclass
class StackRun:
    """What one program run registered."""

    resources: list[Registration] = field(default_factory=list)
    # Stack outputs as serialized (secrets still wrapped).
    outputs: dict[str, Any] = field(default_factory=dict)
    # What each component registered as its outputs (register_outputs), by URN, as serialized.
    component_outputs: dict[str, dict[str, Any]] = field(default_factory=dict)

    def of_type(self, type_: str) -> list[Registration]:
        return [resource for resource in self.resources if resource.type == type_]

    def one(self, type_: str, name_suffix: str = "") -> Registration:
        found = [r for r in self.of_type(type_) if r.name.endswith(name_suffix)]
        assert len(found) == 1, f"expected one {type_} named *{name_suffix}, got {[r.name for r in found]}"
        return found[0]

    def by_urn(self, urn: str) -> Registration:
        return next(resource for resource in self.resources if resource.urn == urn)

    def provider_urn(self, registration: Registration) -> str:
        """The URN of a resource's provider (a provider reference is `urn::id`)."""
        return registration.provider.rsplit("::", 1)[0]

    def depends_on(self, dependent: Registration, dependency: Registration) -> bool:
        """Whether dependent waits for dependency, directly or through other resources."""
        by_urn = {resource.urn: resource for resource in self.resources}
        seen: set[str] = set()
        pending = list(dependent.dependencies)
        while pending:
            urn = pending.pop()
            if urn == dependency.urn:
                return True
            if urn in seen or urn not in by_urn:
                continue
            seen.add(urn)
            pending.extend(by_urn[urn].dependencies)
        return False

    def plain_output(self, name: str) -> Any:
        return reveal(self.outputs[name])


class GraphMocks(pulumi.runtime.Mocks):
    """Answers registrations with their inputs plus the outputs the program reads."""

    def new_resource(self, args: pulumi.runtime.MockResourceArgs) -> tuple[str, dict[str, Any]]:
        state = dict(args.inputs)
        resource_id = f"{args.name}-id"
        if args.typ in ("command:local:Command", "command:remote:Command"):
            state["stdout"] = self._command_stdout(args.name, reveal(args.inputs))
            state["stderr"] = ""
            # As with the real provider, a command created anew (other triggers, script...) gets a new id; a
            # hash of the inputs with sorted keys, since the order the engine passes them in varies between runs.
            inputs = json.dumps(reveal(args.inputs), sort_keys=True, default=str)
            resource_id += "-" + hashlib.sha256(inputs.encode()).hexdigest()[:8]
        elif args.typ.startswith("kubernetes:") and isinstance(state.get("metadata"), dict):
            # The API server gives every object a uid; a replaced object gets a new one.
            state["metadata"] = {**state["metadata"], "uid": f"uid-{args.name}"}
        if args.typ == "kubernetes:helm.sh/v3:Release":
            state["status"] = {"status": "deployed", "version": args.inputs.get("version")}
        if args.typ == "docker:index/image:Image":
            resource_id = args.inputs["imageName"]
            state |= self._image_outputs(args.inputs)
        return resource_id, state

    def call(self, args: pulumi.runtime.MockCallArgs) -> tuple[dict[str, Any], None]:
        return {}, None

    @staticmethod
    def _image_outputs(inputs: Mapping[str, Any]) -> dict[str, Any]:
        """What pulumi-docker's Image reports (provider/image.go): repoDigest is the registry digest
        (repository@sha256:...) after a push, else the local image ID; here a hash of the image name."""
        image_name = inputs["imageName"]
        digest = "sha256:" + hashlib.sha256(image_name.encode()).hexdigest()
        pushed = not inputs.get("skipPush", False)
        return {
            "baseImageName": image_name,
            "repoDigest": f"{image_name.rsplit(':', 1)[0]}@{digest}" if pushed else digest,
            "registryServer": (inputs.get("registry") or {}).get("server", ""),
        }

    @staticmethod
    def _command_stdout(name: str, inputs: Mapping[str, Any]) -> str:
        if name.endswith(("-kind", "-k3s-server", "-k3s-docker")):
            return FAKE_KUBECONFIG
        if name.endswith("-k3s-token"):
            return "K10fake::server:token\n"
        if name.endswith("-pods"):
            environment = inputs.get("environment", {})
            job = environment["SELECTOR"].split("=", 1)[1]
            return "".join(f"{job}-node-0-{rank}-x\n" for rank in range(int(environment["WANT"])))
        return ""


class RecordingMonitor(mocks.MockMonitor):
    """The SDK's mock monitor, also keeping parents, providers, dependencies and the stack's outputs."""

    def __init__(self, run: StackRun) -> None:
        super().__init__(GraphMocks())
        self.run = run

    def RegisterResource(self, request: Any) -> Any:
        response = super().RegisterResource(request)
        if request.type != "pulumi:pulumi:Stack":
            self.run.resources.append(
                Registration(
                    urn=response.urn,
                    type=request.type,
                    name=request.name,
                    parent=request.parent,
                    provider=request.provider,
                    dependencies=list(request.dependencies),
                    custom=request.custom,
                    inputs=rpc.deserialize_properties(request.object),
                    replace_on_changes=list(request.replaceOnChanges),
                    delete_before_replace=request.deleteBeforeReplace,
                    additional_secret_outputs=list(request.additionalSecretOutputs),
                    custom_timeouts={
                        kind: getattr(request.customTimeouts, kind) for kind in ("create", "update", "delete")
                    },
                )
            )
        return response

    def RegisterResourceOutputs(self, request: Any) -> Any:
        if request.urn.split("::")[2] == "pulumi:pulumi:Stack":
            self.run.outputs = rpc.deserialize_properties(request.outputs)
        else:
            self.run.component_outputs[request.urn] = rpc.deserialize_properties(request.outputs)
        return super().RegisterResourceOutputs(request)


def serialize_config(value: Any) -> str:
    """A config value as the Pulumi engine passes it to a program: strings as is, everything else as JSON."""
    return value if isinstance(value, str) else json.dumps(value)


def stack_config(stack: str) -> dict[str, Any]:
    """The stack file's config values, keys without the project prefix (Pulumi.yaml's defaults not applied)."""
    document = yaml.safe_load((REPO_ROOT / f"Pulumi.{stack}.yaml").read_text()) or {}
    prefix = f"{PROJECT}:"
    return {key[len(prefix) :]: value for key, value in (document.get("config") or {}).items()}


def project_defaults() -> dict[str, Any]:
    """Pulumi.yaml's declared defaults, which the CLI merges into every stack's config."""
    project = yaml.safe_load((REPO_ROOT / "Pulumi.yaml").read_text())
    return {key: spec["default"] for key, spec in project["config"].items() if "default" in spec}


def evaluate(
    program: Callable[[], Any],
    *,
    stack: str = "test",
    config: Mapping[str, Any] | None = None,
    secrets: Mapping[str, str] | None = None,
    run: StackRun | None = None,
) -> StackRun:
    """Runs a program under mocks with the given config (keys without the project prefix) and secrets.

    Pass `run` to keep what was registered when the program raises.
    """
    run = StackRun() if run is None else run
    values = {f"{PROJECT}:{key}": serialize_config(value) for key, value in (config or {}).items()}
    values.update({f"{PROJECT}:{key}": value for key, value in (secrets or {}).items()})
    pulumi.runtime.set_all_config(values, [f"{PROJECT}:{key}" for key in secrets or {}])
    pulumi.runtime.set_mocks(
        GraphMocks(), project=PROJECT, stack=stack, preview=False, monitor=RecordingMonitor(run)
    )
    # set_mocks registers a root stack of its own; the program gets a fresh one whose outputs we record.
    runtime_settings.ROOT.set(None)
    runtime_settings.SETTINGS.rpc_manager.clear()
    runtime_settings.SETTINGS.outputs.clear()
    _sync_await(run_in_stack(program))
    return run


def run_main() -> None:
    runpy.run_path(str(REPO_ROOT / "__main__.py"), run_name="__main__")


def run_stack(
    stack: str,
    overrides: Mapping[str, Any] | None = None,
    secrets: Mapping[str, str] | None = None,
    run: StackRun | None = None,
) -> StackRun:
    """The whole program for one stack file: Pulumi.yaml defaults, the stack's values, then overrides."""
    config = {**project_defaults(), **stack_config(stack), **(overrides or {})}
    return evaluate(run_main, stack=stack, config=config, secrets=secrets, run=run)


@dataclass
class StandIns:
    """Stand-ins for what a stack file names on the user's machine, for a run here."""

    # Config overrides: a throwaway SSH key for remote stacks, a fake API server's kubeconfig for existing ones.
    config: dict[str, Any] = field(default_factory=dict)
    # Text that differs from run to run (paths, ports, keys) -> a placeholder, to compare graphs of two runs.
    placeholders: dict[str, str] = field(default_factory=dict)


@contextmanager
def stand_ins(stack: str, scratch: Path) -> Iterator[StandIns]:
    """The stand-ins of one stack file, valid inside the block (a fake API server runs while it lasts)."""
    config = stack_config(stack)
    found = StandIns()
    if config.get("k3sMode") == "remote":
        key = scratch / f"{stack}_id_ed25519"
        key.write_text("-----BEGIN OPENSSH PRIVATE KEY-----\nfake\n-----END OPENSSH PRIVATE KEY-----\n")
        found.config["sshPrivateKeyPath"] = str(key)
        found.placeholders[str(key)] = "<ssh-key>"
    if config.get("clusterKind") != "existing":
        yield found
        return
    from tests.support.fake_apiserver import fake_api_server

    with fake_api_server() as server:
        kubeconfig = scratch / f"{stack}_kubeconfig"
        kubeconfig.write_text(server.kubeconfig())
        found.config["kubeconfigPath"] = str(kubeconfig)
        found.placeholders |= {server.url: "<fake-apiserver>", server.certs.data("ca.crt"): "<fake-ca>"}
        yield found
