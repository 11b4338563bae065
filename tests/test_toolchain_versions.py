"""scripts/toolchain/versions.py: the kind release the toolchain builds is the one the stack pins."""

from __future__ import annotations

import importlib.util
import re
import sys
from types import ModuleType

import pytest
import yaml

from tests.support.docker_base_image import REPO_ROOT


def load(name: str, path: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, REPO_ROOT / path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


versions = load("toolchain_versions", "scripts/toolchain/versions.py")
check_prereqs = load("check_prereqs", "scripts/check_prereqs.py")


def test_kind_version_is_the_release_of_the_pinned_node_image() -> None:
    config = yaml.safe_load((REPO_ROOT / "Pulumi.yaml").read_text())["config"]
    version = versions.kind_version(config)
    assert version == "0.29.0"
    # upstream: kubernetes-sigs/kind pkg/apis/config/defaults/image.go @ v0.29.0 (the release's default image)
    assert config["kindNodeImage"]["default"] == (
        "kindest/node:v1.33.1@sha256:050072256b9a903bd914c0b2866828150cb229cea0efe5892e2b644d5dd3b34f"
    )
    # What check-prereqs tells a user to install is the same release.
    assert re.findall(r"sigs\.k8s\.io/kind@v([\d.]+)", check_prereqs.TOOLS["kind"].how_to_get) == [version]


def test_a_description_without_the_release_is_one_line() -> None:
    with pytest.raises(SystemExit, match="kindNodeImage's description names no kind release"):
        versions.kind_version({"kindNodeImage": {"description": "kind node image"}})
