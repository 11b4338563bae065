"""The trainer image, really built and run: the repository's Dockerfile on a CPU stand-in for its CUDA base.

No registry is reachable here, so tests/support/docker_base_image.py makes the base (Debian, torch 2.13.0+cpu, the
trainer's requirements, and gcc as the pinned base has). The image is built offline (`--network none`, tokenizer
bake skipped) with the classic builder, whose per-step "Using cache" lines tell which layers were rebuilt. Without a Docker engine these tests
skip, unless TRAINSTACK_REQUIRE_DOCKER=1 (CI), where they fail instead.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import os
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from components.trainer_image import CPU_BUILD_ARGS
from tests.support.as_user import run_as
from tests.support.docker_base_image import REPO_ROOT, BaseImageUnavailable, ensure_base_image

REQUIRE_DOCKER = os.environ.get("TRAINSTACK_REQUIRE_DOCKER") == "1"
IMAGE_REPOSITORY = "trainstack-trainer-test"
# 116 MB measured before experiment tracking and metrics (docs/benchmarks.md); mlflow-skinny with its SQLite store
# and server dependencies, pandas, matplotlib and prometheus-client add about 320 MB more (their site-packages in
# an empty virtualenv, less what the image already has): about 435 MB, still under a tenth of the CUDA base.
MAX_BYTES_ADDED_OVER_BASE = 500 * 10**6
# .venv alone is gigabytes: a context this small proves .dockerignore keeps it, .git and tests out.
MAX_BUILD_CONTEXT_BYTES = 5 * 10**6
# DeepSpeed 0.19 needs a recent torch.
MIN_BASE_TORCH = (2, 6)
TRAIN_STEPS = 20
TRAINER_UID = 1000
DOCKER_TIMEOUT_S = 600
SIZE_UNITS = {"B": 1, "kB": 10**3, "KB": 10**3, "MB": 10**6, "GB": 10**9}


@dataclass
class Build:
    tag: str
    seconds: float
    output: str

    def inspect(self) -> dict[str, Any]:
        return inspect_image(self.tag)

    def layers(self) -> list[str]:
        return list(self.inspect()["RootFS"]["Layers"])

    def rebuilt_steps(self) -> list[str]:
        """The RUN/COPY/ADD steps the classic builder executed instead of taking from its cache."""
        steps = re.split(r"^Step \d+/\d+ : ", self.output, flags=re.MULTILINE)[1:]
        return [
            step.splitlines()[0].strip()
            for step in steps
            if step.split(maxsplit=1)[0].upper() in {"RUN", "COPY", "ADD"} and "---> Using cache" not in step
        ]

    def context_bytes(self) -> int:
        match = re.search(r"Sending build context to Docker daemon\s+([\d.]+)\s*([kKMG]?B)", self.output)
        assert match, f"no build context size in the build output:\n{self.output[:2000]}"
        return round(float(match.group(1)) * SIZE_UNITS[match.group(2)])


def docker(*args: str, timeout: float = DOCKER_TIMEOUT_S) -> subprocess.CompletedProcess[str]:
    """Run a docker command; on failure, fail the test with its output."""
    result = subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout)
    if result.returncode != 0:
        pytest.fail(
            f"docker {' '.join(args)} exited {result.returncode}:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
        )
    return result


def inspect_image(tag: str) -> dict[str, Any]:
    details: dict[str, Any] = json.loads(docker("image", "inspect", tag).stdout)[0]
    return details


def docker_unavailable(reason: str) -> None:
    if REQUIRE_DOCKER:
        pytest.fail(f"{reason}; TRAINSTACK_REQUIRE_DOCKER=1 requires the image tests to run")
    pytest.skip(reason)


def engine_problem() -> str | None:
    if shutil.which("docker") is None:
        return "no docker client on PATH"
    try:
        probe = subprocess.run(
            ["docker", "info", "--format", "{{.ServerVersion}}"], capture_output=True, text=True, timeout=30
        )
    except subprocess.TimeoutExpired:
        return "the Docker engine did not answer `docker info` within 30 s"
    if probe.returncode != 0:
        return f"no Docker engine reachable ({probe.stderr.strip()[-300:]}); start dockerd or run .ci/run"
    return None


def build_image(context: Path, base_image: str, tag: str, *, use_cache: bool) -> Build:
    command = [
        "build",
        "--force-rm",  # no containers left behind by a failed step
        "--network",
        "none",
        "--build-arg",
        f"BASE_IMAGE={base_image}",
        "--build-arg",
        "BAKE_TOKENIZER=0",
    ]
    command += ["--tag", tag, str(context)] if use_cache else ["--no-cache", "--tag", tag, str(context)]
    started = time.perf_counter()
    result = subprocess.run(
        ["docker", *command],
        capture_output=True,
        text=True,
        timeout=DOCKER_TIMEOUT_S,
        env={**os.environ, "DOCKER_BUILDKIT": "0"},
    )
    seconds = time.perf_counter() - started
    assert result.returncode == 0, f"docker build failed:\n{result.stdout[-4000:]}\n{result.stderr[-4000:]}"
    return Build(tag, seconds, result.stdout)


def report(capsys: pytest.CaptureFixture[str], line: str) -> None:
    """Figures that belong in the CI log (docs/benchmarks.md quotes them), shown even when the test passes."""
    with capsys.disabled():
        print(f"\n[trainer image] {line}")


@pytest.fixture(scope="module")
def base_image() -> str:
    problem = engine_problem()
    if problem:
        docker_unavailable(problem)
    try:
        return ensure_base_image()
    except BaseImageUnavailable as error:
        docker_unavailable(str(error))
        raise


@pytest.fixture(scope="module")
def cold_build(base_image: str) -> Iterator[Build]:
    """The image built from the repository root with no cache, as the stack builds it (less the bake)."""
    build = build_image(REPO_ROOT, base_image, f"{IMAGE_REPOSITORY}:cold", use_cache=False)
    yield build
    subprocess.run(["docker", "image", "rm", "--force", build.tag], capture_output=True)


def test_default_base_image_is_a_pinned_cuda_pytorch_runtime() -> None:
    """The tests build on a stand-in base, so the production default is checked here, statically."""
    match = re.search(r"^ARG BASE_IMAGE=(\S+)$", (REPO_ROOT / "Dockerfile").read_text(), flags=re.MULTILINE)
    assert match, "the Dockerfile declares no ARG BASE_IMAGE default"
    pinned = re.fullmatch(r"pytorch/pytorch:(\d+)\.(\d+)\.\d+-cuda12\.\d+-cudnn9-runtime", match.group(1))
    assert pinned, f"{match.group(1)} is not a pinned pytorch/pytorch CUDA 12 runtime tag"
    assert (int(pinned.group(1)), int(pinned.group(2))) >= MIN_BASE_TORCH


def test_cpu_build_installs_the_cuda_base_s_torch_from_the_cpu_index() -> None:
    """CPU stacks (components/trainer_image.py CPU_BUILD_ARGS) build on plain Python with TORCH_INDEX_URL: the
    torch they install is the default CUDA base's version, before the requirements (a shared, heavy layer)."""
    text = (REPO_ROOT / "Dockerfile").read_text()
    base = re.search(r"^ARG BASE_IMAGE=pytorch/pytorch:(\S+?)-cuda", text, flags=re.MULTILINE)
    version = re.search(r"^ARG TORCH_VERSION=(\S+)$", text, flags=re.MULTILINE)
    assert base and version and base.group(1) == version.group(1)
    assert re.search(r'^ARG TORCH_INDEX_URL=""$', text, flags=re.MULTILINE)
    assert text.index('--index-url "$TORCH_INDEX_URL"') < text.index("COPY trainer/requirements.txt")
    assert CPU_BUILD_ARGS["TORCH_INDEX_URL"] == "https://download.pytorch.org/whl/cpu"


@pytest.mark.docker
def test_image_is_the_contract_s_entrypoint_user_and_workdir(cold_build: Build) -> None:
    config = cold_build.inspect()["Config"]
    assert config["Entrypoint"] == ["python", "-m", "trainer"]
    assert config["User"] == f"{TRAINER_UID}:{TRAINER_UID}"
    assert config["WorkingDir"] == "/app"
    assert "TIKTOKEN_CACHE_DIR=/opt/tiktoken" in config["Env"]
    identity = docker("run", "--rm", "--network", "none", "--entrypoint", "id", cold_build.tag)
    assert identity.stdout.startswith(f"uid={TRAINER_UID}(trainer) gid={TRAINER_UID}(trainer)")
    # torch.compile's Triton backend compiles host-side launchers when a run starts: a C compiler must be there.
    compiler = docker("run", "--rm", "--network", "none", "--entrypoint", "cc", cold_build.tag, "--version")
    assert compiler.stdout.strip()


# tiktoken's own cache write (tiktoken/load.py read_file_cached, 0.14.0) for a blob it has not seen, the download
# replaced by fixed bytes: what data.encoding=cl100k_base does on first use. Then the baked files' guard: the
# trainer user cannot delete a root-owned file there.
CACHE_WRITE = """
import json, os, pathlib, tiktoken.load as load
load.read_file = lambda blobpath: b"vocabulary"
assert load.read_file_cached("https://example.invalid/cl100k_base.tiktoken") == b"vocabulary"
cache = pathlib.Path(os.environ["TIKTOKEN_CACHE_DIR"])
print(json.dumps(sorted(p.name for p in cache.iterdir())))
"""
# As root, a file standing for the baked ones; then the trainer user (uid 1000) tries to delete it.
BAKED_GUARD = """
import os, pathlib
cache = pathlib.Path(os.environ["TIKTOKEN_CACHE_DIR"])
(cache / "baked").write_bytes(b"gpt2")
os.setgid(1000); os.setuid(1000)
try:
    (cache / "baked").unlink()
except PermissionError:
    print("kept", oct(cache.stat().st_mode & 0o7777))
"""


def cache_write_as_trainer(cache: Path) -> str:
    """CACHE_WRITE run as uid 1000 with TIKTOKEN_CACHE_DIR=cache: its output, or the error it raised."""
    import tiktoken.load  # noqa: F401  (imported here, before the fork: uid 1000 may not read this virtualenv)

    def write() -> str:
        os.environ["TIKTOKEN_CACHE_DIR"] = str(cache)
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            exec(CACHE_WRITE, {})
        return out.getvalue()

    return run_as(TRAINER_UID, write)


@pytest.mark.skipif(os.geteuid() != 0, reason="makes root-owned directories and drops to uid 1000")
def test_the_dockerfiles_tokenizer_cache_mode_lets_the_trainer_user_add_encodings() -> None:
    """The mechanism without Docker: tiktoken's own cache write, as uid 1000, into a root-owned directory with
    the mode the Dockerfile gives TIKTOKEN_CACHE_DIR (1777), and into one with the image's former mode (0755)."""
    dockerfile = (REPO_ROOT / "Dockerfile").read_text()
    mode = re.search(r'install -d -m (\d+) "\$TIKTOKEN_CACHE_DIR"', dockerfile)
    assert mode, "the Dockerfile no longer makes TIKTOKEN_CACHE_DIR with install -d -m MODE"
    base = Path(tempfile.mkdtemp(prefix="trainstack-tiktoken-", dir="/tmp"))  # uid 1000 reaches it
    try:
        base.chmod(0o755)
        for name, octal in (("image", int(mode.group(1), 8)), ("before", 0o755)):
            (base / name).mkdir()
            (base / name).chmod(octal)
        assert len(json.loads(cache_write_as_trainer(base / "image"))) == 1
        assert cache_write_as_trainer(base / "before").startswith(
            "PermissionError: [Errno 13] Permission denied"
        )
    finally:
        shutil.rmtree(base)


@pytest.mark.docker
def test_the_tokenizer_cache_takes_other_encodings_as_the_trainer_user(cold_build: Build) -> None:
    """Issue 25 case 10: a root-owned TIKTOKEN_CACHE_DIR made every encoding but the baked gpt2 fail (exit 2)."""
    written = docker(
        "run", "--rm", "--network", "none", "--entrypoint", "python", cold_build.tag, "-c", CACHE_WRITE
    )
    assert len(json.loads(written.stdout)) == 1, written.stdout  # one cache file, named by the blob's hash
    guarded = docker(
        "run", "--rm", "--network", "none", "--user", "0", "--entrypoint", "python", cold_build.tag, "-c", BAKED_GUARD
    )  # fmt: skip
    assert guarded.stdout.split() == ["kept", "0o1777"], guarded.stdout


@pytest.mark.docker
def test_image_adds_little_over_its_base_and_builds_from_a_small_context(
    cold_build: Build, base_image: str, capsys: pytest.CaptureFixture[str]
) -> None:
    added = cold_build.inspect()["Size"] - inspect_image(base_image)["Size"]
    context = cold_build.context_bytes()
    report(
        capsys,
        f"cold build {cold_build.seconds:.1f} s, {added} bytes over the base, build context {context} bytes",
    )
    assert added <= MAX_BYTES_ADDED_OVER_BASE
    assert context <= MAX_BUILD_CONTEXT_BYTES


@pytest.mark.docker
def test_code_only_change_rebuilds_only_the_last_layer(
    cold_build: Build, base_image: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    context = tmp_path / "context"
    shutil.copytree(REPO_ROOT / "trainer", context / "trainer", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("Dockerfile", ".dockerignore"):
        shutil.copy(REPO_ROOT / name, context / name)
    with open(context / "trainer" / "__init__.py", "a", encoding="utf-8") as module:
        module.write("# a code-only change\n")

    rebuild = build_image(context, base_image, f"{IMAGE_REPOSITORY}:code-change", use_cache=True)
    try:
        report(capsys, f"rebuild after a code-only change {rebuild.seconds:.1f} s")
        assert rebuild.rebuilt_steps() == ["COPY trainer /app/trainer"]
        before, after = cold_build.layers(), rebuild.layers()
        assert after[:-1] == before[:-1]
        assert after[-1] != before[-1]
    finally:
        subprocess.run(["docker", "image", "rm", "--force", rebuild.tag], capture_output=True)


@pytest.mark.docker
def test_image_trains_on_cpu_as_the_trainer_user_into_a_mounted_directory(
    cold_build: Build, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from trainer.checkpoint.layout import tag_for
    from trainer.checkpoint.local import read_manifest

    mount = tmp_path / "mnt"
    mount.mkdir()
    mount.chmod(0o777)  # the container's uid 1000 writes here, whoever owns the host directory
    started = time.perf_counter()
    docker(
        "run", "--rm", "--network", "none", "--shm-size", "512m",
        "--volume", f"{mount}:/mnt/checkpoints",
        cold_build.tag,
        "train", "--config", "trainer/configs/tiny.yaml",
        "--set", "checkpoint.dir=/mnt/checkpoints/checkpoints",
        "--set", "output.dir=/mnt/checkpoints/output",
        "--set", "data.cache_dir=/mnt/checkpoints/cache",
        "--set", f"train.max_steps={TRAIN_STEPS}",
        "--set", "checkpoint.every_steps=10",
    )  # fmt: skip
    report(capsys, f"{TRAIN_STEPS}-step tiny training in the container {time.perf_counter() - started:.1f} s")

    final_checkpoint = mount / "checkpoints" / tag_for(TRAIN_STEPS)
    manifest, problem = read_manifest(final_checkpoint)
    assert problem is None
    assert manifest is not None and manifest["step"] == TRAIN_STEPS
    assert final_checkpoint.stat().st_uid == TRAINER_UID
    records = [json.loads(line) for line in (mount / "output" / "metrics.jsonl").read_text().splitlines()]
    losses = {record["step"]: record["loss"] for record in records if record.get("event") == "train"}
    assert max(losses) == TRAIN_STEPS
    assert all(math.isfinite(loss) for loss in losses.values())
    summary = json.loads((mount / "output" / "summary.json").read_text())
    assert summary["final_step"] == TRAIN_STEPS
