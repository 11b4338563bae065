"""A CPU stand-in for the Dockerfile's CUDA PyTorch base, made with no container registry in reach.

Debian bookworm from debootstrap (its python3 is 3.11, the CPU torch wheel's Python; gcc, as the pinned base
has), a virtualenv at /opt/venv first on PATH (as the pytorch/pytorch images put their conda Python first), and
torch 2.13.0+cpu plus the trainer's requirements, all installed from a wheelhouse built on the host, then `docker import`ed.
The tag is a hash of what goes in, so later runs on the same machine reuse the image.

    python -m tests.support.docker_base_image                                 # full base; prints its tag
    python -m tests.support.docker_base_image --without-trainer-requirements  # torch only, like pytorch/pytorch

Needs root (debootstrap, chroot), a Docker engine, and the repository's virtualenv (torch installed, since
DeepSpeed's wheel is built against it).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
TRAINER_REQUIREMENTS = REPO_ROOT / "trainer" / "requirements.txt"
IMAGE_REPOSITORY = "trainstack-test-base"

# pip finds the CPU build of this version on these machines; DeepSpeed is built against it.
TORCH_REQUIREMENT = "torch==2.13.0"
# What the Dockerfile's `pip install --no-build-isolation` needs to build DeepSpeed from its sdist.
BUILD_TOOLS = ("setuptools", "wheel")
DEBIAN_SUITE = "bookworm"
# Empty: debootstrap's own default mirror.
DEBIAN_MIRROR = os.environ.get("TRAINSTACK_DEBIAN_MIRROR", "")
VENV = "/opt/venv"
SYSTEM_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
# Inside the chroot the host's PIP_* settings (find-links, extra index) must not apply.
CHROOT_ENV = {"PATH": SYSTEM_PATH, "HOME": "/root", "LANG": "C.UTF-8"}


class BaseImageUnavailable(RuntimeError):
    """The base image is not there and this machine cannot make it; the message says what is missing."""


def image_tag(with_trainer_requirements: bool) -> str:
    digest = hashlib.sha256()
    for part in (
        Path(__file__).read_bytes(),
        TRAINER_REQUIREMENTS.read_bytes(),
        bytes([with_trainer_requirements]),
    ):
        digest.update(hashlib.sha256(part).digest())
    variant = "full" if with_trainer_requirements else "torch-only"
    return f"{IMAGE_REPOSITORY}:{variant}-{digest.hexdigest()[:16]}"


def image_exists(tag: str) -> bool:
    return subprocess.run(["docker", "image", "inspect", tag], capture_output=True).returncode == 0


def missing_prerequisites() -> list[str]:
    missing = [tool for tool in ("debootstrap", "chroot", "tar") if shutil.which(tool) is None]
    if os.geteuid() != 0:
        missing.append("root (debootstrap and chroot need it)")
    if sys.version_info[:2] != (3, 11):
        missing.append(f"Python 3.11 to build the wheelhouse (this is {sys.version.split()[0]})")
    return missing


def build_wheelhouse(wheelhouse: Path, requirement_args: list[str]) -> None:
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--quiet",
            "--no-build-isolation",
            "--wheel-dir",
            str(wheelhouse),
            *requirement_args,
        ],
        check=True,
        env={**os.environ, "DS_BUILD_OPS": "0"},
    )


def bootstrap_debian(rootfs: Path) -> None:
    subprocess.run(
        [
            "debootstrap",
            "--variant=minbase",
            "--include=python3,python3-venv,gcc,libc6-dev",  # the pinned base has a C compiler too
            DEBIAN_SUITE,
            str(rootfs),
            *([DEBIAN_MIRROR] if DEBIAN_MIRROR else []),
        ],
        check=True,
        stdout=subprocess.DEVNULL,
    )


def install_into_venv(rootfs: Path, wheelhouse: Path, requirement_args: list[str]) -> None:
    inside = Path("/tmp/wheelhouse")
    shutil.copytree(wheelhouse, rootfs / inside.relative_to("/"))
    chroot = ["chroot", str(rootfs)]
    subprocess.run([*chroot, "python3", "-m", "venv", VENV], check=True, env=CHROOT_ENV)
    subprocess.run(
        [
            *chroot,
            f"{VENV}/bin/pip",
            "install",
            "--quiet",
            "--no-index",
            "--find-links",
            str(inside),
            *requirement_args,
        ],
        check=True,
        env=CHROOT_ENV,
    )
    shutil.rmtree(rootfs / inside.relative_to("/"))


def drop_package_caches(rootfs: Path) -> None:
    """apt's downloaded lists and packages: ~100 MB that `apt-get update` brings back when needed."""
    for cache in ("var/cache/apt", "var/lib/apt/lists", "root/.cache"):
        for entry in (rootfs / cache).glob("*"):
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()


def import_rootfs(rootfs: Path, tag: str) -> None:
    tar = subprocess.Popen(["tar", "-C", str(rootfs), "--numeric-owner", "-c", "."], stdout=subprocess.PIPE)
    try:
        subprocess.run(
            ["docker", "import", "--change", f"ENV PATH={VENV}/bin:{SYSTEM_PATH}", "-", tag],
            stdin=tar.stdout,
            check=True,
            stdout=subprocess.DEVNULL,
        )
    finally:
        assert tar.stdout is not None
        tar.stdout.close()
        if tar.wait() != 0:
            raise subprocess.CalledProcessError(tar.returncode, tar.args)


def remove_other_versions(tag: str) -> None:
    """Drop the images this module built from older inputs: each is over 1 GB."""
    variant = tag.split(":")[1].rsplit("-", 1)[0]
    listed = subprocess.run(
        ["docker", "image", "ls", IMAGE_REPOSITORY, "--format", "{{.Repository}}:{{.Tag}}"],
        capture_output=True,
        text=True,
        check=True,
    )
    stale = [
        image
        for image in listed.stdout.split()
        if image != tag and image.startswith(f"{IMAGE_REPOSITORY}:{variant}-")
    ]
    if stale:
        subprocess.run(["docker", "image", "rm", *stale], capture_output=True)


def ensure_base_image(with_trainer_requirements: bool = True) -> str:
    """The tag of the base image, built first if this machine does not have it yet."""
    tag = image_tag(with_trainer_requirements)
    if image_exists(tag):
        return tag
    missing = missing_prerequisites()
    if missing:
        raise BaseImageUnavailable(f"cannot build the test base image {tag}: needs {', '.join(missing)}")
    with tempfile.TemporaryDirectory(prefix="trainstack-base-") as work_dir:
        work = Path(work_dir)
        host_args = [TORCH_REQUIREMENT, *BUILD_TOOLS]
        chroot_args = [TORCH_REQUIREMENT, *BUILD_TOOLS]
        if with_trainer_requirements:
            host_args += ["-r", str(TRAINER_REQUIREMENTS)]
            chroot_args += ["-r", "/tmp/wheelhouse/requirements.txt"]
        build_wheelhouse(work / "wheelhouse", host_args)
        shutil.copy(TRAINER_REQUIREMENTS, work / "wheelhouse" / "requirements.txt")
        bootstrap_debian(work / "rootfs")
        install_into_venv(work / "rootfs", work / "wheelhouse", chroot_args)
        drop_package_caches(work / "rootfs")
        import_rootfs(work / "rootfs", tag)
    remove_other_versions(tag)
    return tag


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--without-trainer-requirements",
        action="store_true",
        help="torch only, so the Dockerfile's pip step installs DeepSpeed and the rest (needs PyPI)",
    )
    args = parser.parse_args()
    print(ensure_base_image(with_trainer_requirements=not args.without_trainer_requirements))


if __name__ == "__main__":
    main()
