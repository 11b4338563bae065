"""trainer.checkpoint: a published checkpoint is trusted only while its files match its manifest."""

from __future__ import annotations

from pathlib import Path

from trainer.checkpoint import read_manifest, tag_for, write_manifest


def published(tmp_path: Path) -> Path:
    directory = tmp_path / tag_for(7)
    (directory / "sub").mkdir(parents=True)
    (directory / "model.pt").write_bytes(b"weights")
    (directory / "sub" / "rng.pt").write_bytes(b"rng")
    write_manifest(directory, step=7, world_size=2, extra={"model": {"n_layer": 2}})
    return directory


def test_manifest_lists_every_file(tmp_path: Path) -> None:
    manifest, problem = read_manifest(published(tmp_path))
    assert problem is None and manifest is not None
    assert (manifest["step"], manifest["world_size"], manifest["model"]) == (7, 2, {"n_layer": 2})
    assert set(manifest["files"]) == {"model.pt", "sub/rng.pt"}
    assert manifest["files"]["model.pt"]["bytes"] == 7


def test_missing_truncated_or_altered_files_are_detected(tmp_path: Path) -> None:
    directory = published(tmp_path)
    (directory / "model.pt").write_bytes(b"weighs!")
    assert read_manifest(directory) == (None, "model.pt does not match its checksum")
    (directory / "model.pt").write_bytes(b"w")
    assert read_manifest(directory) == (None, "model.pt has 1 bytes, the manifest says 7")
    (directory / "model.pt").write_bytes(b"weights")
    (directory / "sub" / "rng.pt").unlink()
    assert read_manifest(directory) == (None, "sub/rng.pt is missing")
    (directory / "manifest.json").write_text("{not json")
    assert read_manifest(directory) == (None, "no readable manifest.json (JSONDecodeError)")


def test_tags_sort_by_step() -> None:
    assert tag_for(100) == "step_000100" and sorted([tag_for(99), tag_for(100)]) == [
        "step_000099",
        "step_000100",
    ]
