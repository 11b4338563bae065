"""scripts/toolchain/kind_manifest.py: kind's node-image manifests read from its Go constants."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.support.docker_base_image import REPO_ROOT

SCRIPT = REPO_ROOT / "scripts" / "toolchain" / "kind_manifest.py"

# The form of kind v0.29.0's pkg/build/nodeimage/const_storage.go, abridged.
SOURCE = """package nodeimage

const storageProvisionerImage = "docker.io/kindest/local-path-provisioner:v20250214-acbabc1a"
const storageHelperImage = "docker.io/kindest/local-path-helper:v20241212-8ac705d0"

var defaultStorageImages = []string{storageProvisionerImage, storageHelperImage}

const defaultStorageManifest = `
kind: Deployment
spec:
  containers:
    - image: ` + storageProvisionerImage + `
      args: [--helper-image, ` + storageHelperImage + `]
`
"""


def manifest(tmp_path: Path, name: str, source: str = SOURCE) -> subprocess.CompletedProcess[str]:
    (tmp_path / "const.go").write_text(source)
    return subprocess.run(
        [sys.executable, str(SCRIPT), str(tmp_path / "const.go"), name], capture_output=True, text=True
    )


def test_a_manifest_is_its_raw_strings_joined_with_the_image_constants(tmp_path: Path) -> None:
    assert manifest(tmp_path, "defaultStorageManifest").stdout == (
        "\nkind: Deployment\nspec:\n  containers:\n"
        "    - image: docker.io/kindest/local-path-provisioner:v20250214-acbabc1a\n"
        "      args: [--helper-image, docker.io/kindest/local-path-helper:v20241212-8ac705d0]\n"
    )
    assert (
        manifest(tmp_path, "storageHelperImage").stdout
        == "docker.io/kindest/local-path-helper:v20241212-8ac705d0"
    )


def test_an_unknown_name_or_form_fails_with_one_line(tmp_path: Path) -> None:
    result = manifest(tmp_path, "defaultCNIManifest")
    assert result.returncode == 1 and result.stderr.strip().splitlines() == [
        f"kind_manifest: no string constant defaultCNIManifest in {tmp_path / 'const.go'}"
    ]
    result = manifest(tmp_path, "x", "const x = `a` + later\nconst later = `b`\n")
    assert "x refers to later, which is no string constant before it" in result.stderr
