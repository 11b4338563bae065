"""trainer.config: presets load, overrides apply, every bad key or value is one clear ConfigError."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from trainer.config import MODEL_PRESETS, ConfigError, load_config
from trainer.dataset import find_text_files

from .conftest import REPO, TINY_CONFIG

CONFIGS = sorted((REPO / "trainer" / "configs").glob("*.yaml"))


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_shipped_configs_are_valid(path: Path) -> None:
    """Every value a shipped config writes comes through loading unchanged (none replaced by a default),
    and its data.path names the bundled corpus (the configs run from the repository root)."""
    written = yaml.safe_load(path.read_text())
    resolved = load_config(path).to_dict()
    for section, values in written.items():
        for key, value in values.items():
            assert resolved[section][key] == value, f"{section}.{key}"
    assert find_text_files(str(REPO / resolved["data"]["path"]))


def test_shipped_presets_cover_cpu_and_gpt2() -> None:
    assert {p.stem for p in CONFIGS} >= {"tiny", "gpt2-124m"}
    gpt2 = load_config(REPO / "trainer" / "configs" / "gpt2-124m.yaml").to_dict()
    assert (gpt2["model"]["n_layer"], gpt2["model"]["n_embd"], gpt2["model"]["block_size"]) == (12, 768, 1024)


def test_defaults_and_preset_shape_are_resolved() -> None:
    resolved = load_config(TINY_CONFIG).to_dict()
    assert resolved["train"]["zero_stage"] == 0
    assert resolved["output"]["peak_tflops"] is None
    assert {k: resolved["model"][k] for k in ("n_layer", "n_head", "n_embd")} == MODEL_PRESETS["tiny"]


def test_overrides_are_yaml_scalars_and_win() -> None:
    config = load_config(
        TINY_CONFIG, ["train.max_steps=7", "train.lr=1e-3", "model.n_layer=3", "data.path=a b"]
    )
    assert (config.train.max_steps, config.train.lr, config.model_shape()["n_layer"]) == (7, 1e-3, 3)
    assert config.data.path == "a b"


def test_minimal_config_from_overrides_alone() -> None:
    required = ["model.preset=tiny", "data.path=x", "train.max_steps=1", "checkpoint.dir=c",
                "checkpoint.every_steps=1", "output.dir=o"]  # fmt: skip
    assert load_config(None, required).train.max_steps == 1
    with pytest.raises(ConfigError, match=r"missing required key checkpoint\.every_steps"):
        load_config(None, [o for o in required if not o.startswith("checkpoint.every")])


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["train.max_steps=abc"], r"train\.max_steps: expected integer, got str 'abc'"),
        (["train.max_steps=2.5"], r"train\.max_steps: expected integer"),
        (["train.lr=true"], r"train\.lr: expected number, got bool"),
        (["train.max_steps=0"], r"train\.max_steps: must be > 0"),
        (["train.zero_stage=4"], r"train\.zero_stage: must be one of 0, 1, 2, 3"),
        (["train.precision=fp16"], r"train\.precision: must be one of auto, bf16, fp32"),
        (["train.bogus=1"], r"unknown key train\.bogus; allowed keys in 'train': .*max_steps"),
        (["model.preset=huge"], r"model\.preset: must be one of tiny, .*gpt2-124m"),
        (["model.n_head=5"], r"model\.n_embd \(64\) must be divisible by model\.n_head \(5\)"),
        (["train.min_lr=1"], r"train\.min_lr \(1\.0\) must not exceed train\.lr"),
        (["data.val_fraction=1"], r"data\.val_fraction: must be between 0 and 1"),
        (["nosuch.key=1"], r"unknown section 'nosuch'"),
        (["max_steps=1"], r"expected section\.key=value"),
        (["train.max_steps"], r"expected section\.key=value"),
        (["data.path=[a, b]"], r"the value must be a scalar"),
    ],
)
def test_bad_values_name_the_key(overrides: list[str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config(TINY_CONFIG, overrides)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("model: [1, 2]\n", r"model: expected a mapping of keys, got list"),
        ("- just a list\n", r"expected a mapping of sections, got list"),
        ("model: {preset: tiny\n", r"is not valid YAML \(line \d+\)"),
        ("extra: {}\n", r"unknown section 'extra'"),
    ],
)
def test_bad_files(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message):
        load_config(path)


def test_missing_file() -> None:
    with pytest.raises(ConfigError, match=r"config file not found: /nonexistent\.yaml"):
        load_config("/nonexistent.yaml")


def test_config_module_imports_nothing_heavy() -> None:
    code = "import sys, trainer.config; print(sorted({'torch', 'deepspeed', 'tiktoken', 'numpy'} & set(sys.modules)))"
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == "[]"


@pytest.mark.slow  # `python -m trainer print-config` in a subprocess
def test_print_config_round_trips() -> None:
    from trainer.cli import main

    resolved = load_config(TINY_CONFIG, ["train.max_steps=9"]).to_dict()
    out = subprocess.run(
        [sys.executable, "-m", "trainer", "print-config", "--config", str(TINY_CONFIG), "--set", "train.max_steps=9"],
        cwd=REPO, capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    assert yaml.safe_load(out) == resolved
    assert main(["validate", "--config", str(TINY_CONFIG)]) == 0
