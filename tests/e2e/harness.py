"""What the real end-to-end run is made of: the toolchain's environment, commands, the test cluster, the report.

The run drives the real Pulumi CLI and providers (built by `make e2e-toolchain` into the cache) against the
test cluster of tests/e2e/cluster/ (a fixture: real Kubernetes nodes in containers), on a copy of the
project, with a throwaway `file://` backend and PULUMI_HOME, so that nothing of the user's Pulumi state or of
the checkout is touched. Every command and its output go to <run dir>/commands.log.
"""

from __future__ import annotations

import fcntl
import json
import os
import shlex
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

REPO_ROOT = Path(__file__).resolve().parents[2]
CLUSTER_SCRIPTS = Path(__file__).resolve().parent / "cluster"
CACHE = Path(os.environ.get("TRAINSTACK_E2E_CACHE", Path.home() / ".cache" / "trainstack" / "e2e"))
REPORT_PATH = REPO_ROOT / "runs" / "e2e" / "report.json"
# The test cluster's name: the label on its Docker objects (tests/e2e/cluster/up.sh) and its nodes' prefix.
E2E_CLUSTER = "trainstack-e2e"
# Never a real secret: the throwaway stack's passphrase.
PASSPHRASE = "trainstack-e2e-throwaway"
# Free space the run needs on Docker's filesystem before it starts: the most it took at once, measured by
# DiskWatch (docs/benchmarks.md "Real end-to-end run": the image pushed to the test registry and unpacked on
# each node, the local reference run), rounded up with room. CI (stop 21) ran out of it on the second node's
# pull of the image and waited 30 minutes for a job that could never start.
MIN_FREE_GIB = 25
GIB = 1 << 30


class E2EFailure(AssertionError):
    """A check of the real run failed; the message says which and what was seen."""


def check(condition: bool, message: str) -> None:
    """Fails the current phase with message unless condition holds."""
    if not condition:
        raise E2EFailure(message)


@dataclass
class Report:
    """runs/e2e/report.json: one key per phase, written after every phase so a cut-off run keeps the rest."""

    path: Path = REPORT_PATH
    data: dict[str, Any] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)
    # A nested report (`nested`) prefixes its phases with its key where they are printed or failed, and saves
    # through the report it lives in.
    label: str = ""
    parent: Report | None = None

    def nested(self, key: str) -> Report:
        """Another stack's phases under one key of this report (a kind stack's `up` beside the test cluster's)."""
        return Report(self.path, self.data.setdefault(key, {}), self.failures, f"{key}.", self)

    def save(self) -> None:
        if self.parent is not None:
            self.parent.save()
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.data["failures"] = self.failures
        temporary = self.path.with_suffix(".json.tmp")
        temporary.write_text(json.dumps(self.data, indent=2, sort_keys=False) + "\n")
        temporary.replace(self.path)

    @contextmanager
    def phase(self, name: str) -> Iterator[dict[str, Any]]:
        """A phase's record: `ok` false and the error when its body raises E2EFailure (the run goes on)."""
        record: dict[str, Any] = self.data.setdefault(name, {})
        started = time.monotonic()
        name = f"{self.label}{name}"
        print(f"e2e: {name} ...", flush=True)
        try:
            yield record
            record.setdefault("ok", True)
        except E2EFailure as failure:
            record["ok"] = False
            record["error"] = str(failure)
            self.failures.append(f"{name}: {failure}")
            print(f"e2e: {name} FAILED: {failure}", flush=True)
        finally:
            record.setdefault("seconds", round(time.monotonic() - started, 1))
            self.save()
        if record.get("ok"):
            print(f"e2e: {name} ok ({record['seconds']} s)", flush=True)


class Shell:
    """Runs commands with the toolchain's environment, logging each with its output."""

    def __init__(self, run_dir: Path, env: Mapping[str, str], cwd: Path) -> None:
        self.run_dir = run_dir
        self.env = dict(env)
        self.cwd = cwd
        self.log_path = run_dir / "commands.log"

    def run(
        self,
        command: Sequence[str],
        *,
        check: bool = True,
        timeout: float = 600,
        input: str | None = None,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
        log: bool = True,
    ) -> subprocess.CompletedProcess[str]:
        """Runs command; with check, a non-zero exit is an E2EFailure naming it and its output's tail.
        log=False keeps a polling command out of commands.log (unless it fails a check)."""
        started = time.monotonic()
        try:
            result = subprocess.run(
                list(command),
                cwd=cwd or self.cwd,
                env={**self.env, **(env or {})},
                input=input,
                capture_output=True,
                text=True,
                timeout=timeout,
            )
        except subprocess.TimeoutExpired as expired:
            self._log(command, None, str(expired.stdout or ""), str(expired.stderr or ""), timeout)
            raise E2EFailure(f"`{shlex.join(command)}` did not finish in {timeout:.0f} s") from None
        if log or (check and result.returncode != 0):
            self._log(command, result.returncode, result.stdout, result.stderr, time.monotonic() - started)
        if check and result.returncode != 0:
            tail = "\n".join((result.stdout + result.stderr).strip().splitlines()[-15:])
            raise E2EFailure(f"`{shlex.join(command)}` exited {result.returncode}:\n{tail}")
        return result

    def _log(
        self, command: Sequence[str], code: int | None, stdout: str, stderr: str, seconds: float
    ) -> None:
        with open(self.log_path, "a", encoding="utf-8") as log:
            log.write(f"\n$ {shlex.join(command)}    # exit {code}, {seconds:.1f} s\n{stdout}{stderr}")


def docker_root() -> Path:
    """Where the Docker engine keeps images and volumes (the test cluster's nodes and registry live there)."""
    answer = subprocess.run(
        ["docker", "info", "--format", "{{.DockerRootDir}}"], capture_output=True, text=True
    )
    return Path(answer.stdout.strip() or "/var/lib/docker")


def free_gib(path: Path) -> float:
    """Free space (GiB, for an unprivileged writer) on the filesystem holding path."""
    return shutil.disk_usage(path).free / GIB


def disk_problem(path: Path, needed_gib: float = MIN_FREE_GIB) -> str | None:
    """The one-line reason the run cannot start for lack of disk at path, or None when there is room."""
    free = free_gib(path)
    if free >= needed_gib:
        return None
    return (
        f"{free:.1f} GiB free on the filesystem of {path}, the run needs {needed_gib} GiB "
        "(the 5.7 GB trainer image in the test registry and unpacked on every node); free some, e.g. "
        "`docker image prune`, `docker builder prune`, `go clean -cache`, and run it again"
    )


class DiskWatch(threading.Thread):
    """Samples the free space at path every `interval` seconds until stop(), which says the least seen."""

    def __init__(self, path: Path, interval: float = 5.0) -> None:
        super().__init__(daemon=True)
        self.path = path
        self.interval = interval
        self.at_start = self.least = free_gib(path)
        self._stopped = threading.Event()

    def run(self) -> None:
        while not self._stopped.wait(self.interval):
            self.least = min(self.least, free_gib(self.path))

    def stop(self) -> dict[str, Any]:
        """Stops sampling; the figures for the report (GiB): free at the start, least free, most used."""
        self._stopped.set()
        self.least = min(self.least, free_gib(self.path))
        return {
            "path": str(self.path),
            "free_at_start_gib": round(self.at_start, 1),
            "least_free_gib": round(self.least, 1),
            "peak_used_gib": round(self.at_start - self.least, 1),
        }


def hold_run_lock() -> IO[str] | None:
    """This machine's e2e lock (CACHE/e2e.lock), held until the process exits; None while another run holds it:
    the run removes what an earlier one left, which must not be a live one's clusters."""
    CACHE.mkdir(parents=True, exist_ok=True)
    handle = open(CACHE / "e2e.lock", "a")  # noqa: SIM115 -- held open for the life of the run
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        return None
    return handle


def labelled_containers(label: str) -> list[str]:
    """The IDs of this engine's containers, running or not, that carry label (KEY=VALUE)."""
    return subprocess.run(
        ["docker", "ps", "-aq", "--filter", f"label={label}"], capture_output=True, text=True, check=False
    ).stdout.split()


def remove_test_cluster(cluster: str = E2E_CLUSTER) -> list[str]:
    """Removes a test cluster an interrupted run left (down.sh); what of it was there."""
    listed = labelled_containers(f"dev.trainstack.e2e-cluster={cluster}")
    if not listed:
        return []
    with tempfile.TemporaryDirectory() as state:
        env = {
            **os.environ,
            "E2E_CLUSTER": cluster,
            "E2E_STATE": f"{state}/cluster",
            "TRAINSTACK_E2E_CACHE": str(CACHE),
        }
        subprocess.run(["bash", str(CLUSTER_SCRIPTS / "down.sh")], env=env, capture_output=True, check=False)
    return [f"test cluster {cluster} ({len(listed)} containers)"]


def toolchain_env(run_dir: Path) -> dict[str, str]:
    """The environment under which the CLI runs the toolchain's binaries and never downloads anything."""
    bin_dir = CACHE / "bin"
    home = run_dir / "pulumi-home"
    state = run_dir / "state"
    home.mkdir(parents=True, exist_ok=True)
    state.mkdir(parents=True, exist_ok=True)
    return {
        **os.environ,
        "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
        "PULUMI_HOME": str(home),
        "PULUMI_BACKEND_URL": f"file://{state}",
        "PULUMI_CONFIG_PASSPHRASE": PASSPHRASE,
        "PULUMI_DISABLE_AUTOMATIC_PLUGIN_ACQUISITION": "1",
        "PULUMI_SKIP_UPDATE_CHECK": "1",
        "PULUMI_AUTOMATION_API_SKIP_VERSION_CHECK": "1",
        # `up --event-log` (the timeline's engine events) exists only with debug commands on.
        # upstream: pulumi/pulumi pkg/cmd/pulumi/operations/up.go @ v3.259.0
        "PULUMI_DEBUG_COMMANDS": "true",
        # No colour codes in logs; no interactive prompts.
        "NO_COLOR": "1",
        "PULUMI_NON_INTERACTIVE": "1",
    }


def toolchain_complete() -> tuple[bool, str]:
    """Whether `make e2e-toolchain` has built everything, and its one-line answer when not."""
    result = subprocess.run(
        ["bash", str(REPO_ROOT / "scripts" / "e2e_toolchain.sh"), "--check"], capture_output=True, text=True
    )
    return result.returncode == 0, (result.stdout + result.stderr).strip()


def project_copy(destination: Path) -> Path:
    """The tracked and unignored files of the checkout, copied (the run edits its copy), with .venv linked."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=REPO_ROOT,
        capture_output=True,
        check=True,
    ).stdout.split(b"\0")
    if destination.exists():
        shutil.rmtree(destination)
    for name in filter(None, (item.decode() for item in listed)):
        source = REPO_ROOT / name
        if source.is_file():
            target = destination / name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)
    (destination / ".venv").symlink_to(REPO_ROOT / ".venv")
    return destination


def read_env_file(path: Path) -> dict[str, str]:
    """KEY=value lines (as the cluster scripts write them)."""
    values = {}
    for line in path.read_text().splitlines():
        key, separator, value = line.partition("=")
        if separator and not line.startswith("#"):
            values[key.strip()] = value.strip()
    return values


def wait_until(
    what: str,
    seconds: float,
    probe: Callable[[], Any],
    interval: float = 2.0,
    seen: Callable[[], str] | None = None,
) -> Any:
    """probe() until it returns something truthy; E2EFailure naming `what` after `seconds`, with what
    seen() then says (the state that explains the wait) when given."""
    deadline = time.monotonic() + seconds
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise E2EFailure(f"{what}: not after {seconds:.0f} s" + (f"; {seen()}" if seen else ""))
        time.sleep(interval)
