"""trainer.config: presets load, overrides apply, every bad key or value is one clear ConfigError."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from trainer.config import MODEL_PRESETS, ConfigError, StopCondition, is_s3_url, load_config, parse_s3_url
from trainer.sources import find_text_files

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
        (["train.zero_stage=4"], r"train\.zero_stage: must be >= 0 and <= 3, got 4"),
        (["train.precision=fp16"], r"train\.precision: must be one of auto, bf16, fp32"),
        (["train.bogus=1"], r"unknown key train\.bogus; allowed keys in 'train': .*max_steps"),
        (["model.preset=huge"], r"model\.preset: must be one of tiny, .*gpt2-124m"),
        (["model.n_head=5"], r"model\.n_embd \(64\) must be divisible by model\.n_head \(5\)"),
        (["train.min_lr=1"], r"train\.min_lr \(1\.0\) must not exceed train\.lr"),
        (["data.val_fraction=1"], r"data\.val_fraction: must be > 0 and < 1, got 1"),
        (["nosuch.key=1"], r"unknown section 'nosuch'"),
        (["max_steps=1"], r"expected section\.key=value"),
        (["train.max_steps"], r"expected section\.key=value"),
        (["data.path=[a, b]"], r"the value must be a scalar"),
        (["train.zero_stage=true"], r"train\.zero_stage: expected integer, got bool True"),
        (["data.path=3"], r"data\.path: expected string, got int 3"),
        (["model.bias=1"], r"model\.bias: expected boolean, got int 1"),
        (["output.progress=loud"], r"output\.progress: must be one of auto, on, off, got 'loud'"),
        (["model.dropout=-0.1"], r"model\.dropout: must be >= 0 and < 1, got -0\.1"),
        (["checkpoint.dir= "], r"checkpoint\.dir: must name a directory or an s3://bucket/prefix, got ''"),
        (["data.text_field= "], r"data\.text_field: must not be empty"),
        (["train.stop_at=val_loss"], r"train\.stop_at: expected '<metric> <operator> <number>'"),
        (["train.stop_at=val_loss=2.5"], r"train\.stop_at: expected .*operator one of <= >= < >"),
        (["train.stop_at=accuracy>=0.9"], r"train\.stop_at: unknown metric 'accuracy'; .*loss, val_loss"),
        (["train.stop_at=val_loss<=low"], r"train\.stop_at: expected '<metric> <operator> <number>'"),
        (["train.stop_at=val_loss<=nan"], r"train\.stop_at: the threshold must be a finite number"),
        (["train.stop_at=2.5"], r"train\.stop_at: expected string or null, got float 2\.5"),
        (["train.stop_at=val_loss<=2.5", "train.eval_every=0"], r"only with train\.eval_every > 0"),
        (["output.tracking=wandb"], r"output\.tracking: must be one of none, mlflow, got 'wandb'"),
        (
            ["output.tracking=mlflow", "output.tracking_uri=file:///tmp/x"],
            r"output\.tracking_uri: must be an http",
        ),
        (
            ["output.tracking=mlflow", "output.tracking_uri=sqlite://x.db"],
            r"output\.tracking_uri: must name a file",
        ),
        (
            ["output.tracking_uri=http://mlflow:5000"],
            r"output\.tracking_uri: set while output\.tracking is none",
        ),
        (["output.experiment= "], r"output\.experiment: must not be empty"),
        (["output.metrics_port=0"], r"output\.metrics_port: must be >= 1 and <= 65535, got 0"),
        (["output.metrics_port=70000"], r"output\.metrics_port: must be >= 1 and <= 65535, got 70000"),
        (["output.metrics_port=http"], r"output\.metrics_port: expected integer or null, got str 'http'"),
        # a NaN step size trained to NaN weights and published them
        (["train.lr=.inf"], r"^train\.lr: must be a finite number, got inf$"),
        (["train.weight_decay=.nan"], r"^train\.weight_decay: must be a finite number, got nan$"),
        # an object store is for checkpoints only: output.dir=s3://b/x wrote to ./s3:/b/x
        (
            ["output.dir=s3://b/out"],
            r"^output\.dir: must be a local directory \(an object store is for checkpoint",
        ),
        (["data.cache_dir=S3:/b/c"], r"^data\.cache_dir: must be a local directory"),
        # pathlib's expanduser raised RuntimeError (a traceback) for a user this machine does not know
        (
            ["output.dir=~nosuchuser-x/o"],
            r"^output\.dir: names a user this machine does not know after ~",
        ),
        (
            ["checkpoint.dir=~nosuchuser-x/c"],
            r"^checkpoint\.dir: names a user this machine does not know after ~",
        ),
        (
            ["data.cache_dir=~nosuchuser-x/c"],
            r"^data\.cache_dir: names a user this machine does not know after ~",
        ),
        (["data.path=~nosuchuser-x/*.txt"], r"^data\.path: names a user this machine does not know after ~"),
    ],
)
def test_bad_values_name_the_key(overrides: list[str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config(TINY_CONFIG, overrides)


@pytest.mark.parametrize(
    ("value", "bucket", "prefix"),
    [
        ("s3://team-bucket/runs/gpt", "team-bucket", "runs/gpt"),
        ("s3://team.bucket-1/runs/gpt/", "team.bucket-1", "runs/gpt"),
        ("s3://abc", "abc", ""),
        ("s3://abc/", "abc", ""),
    ],
)
def test_checkpoint_dir_may_be_an_s3_url(value: str, bucket: str, prefix: str) -> None:
    assert load_config(TINY_CONFIG, [f"checkpoint.dir={value}"]).checkpoint.dir == value
    assert parse_s3_url(value) == (bucket, prefix)
    assert not is_s3_url("/mnt/checkpoints") and is_s3_url(value)


@pytest.mark.parametrize(
    "value",
    ["s3://Team/x", "s3://ab/x", "s3://a_b_c/x", "s3://-abc/x", "s3://abc-/x", "s3://a..b/x",
     "s3://192.168.1.10/x", f"s3://{'a' * 64}/x", "s3:///x", "s3://abc//x", "s3://abc/./x", "s3://abc/x/../y",
     "s3:/abc/x", "S3://abc/x", "gs://abc/x", "https://abc/x"],
)  # fmt: skip
def test_a_bad_checkpoint_url_is_one_line_naming_the_key_and_the_shape(value: str) -> None:
    with pytest.raises(ConfigError) as error:
        load_config(TINY_CONFIG, [f"checkpoint.dir={value}"])
    message = str(error.value)
    assert message.startswith("checkpoint.dir: must be a directory, or s3://bucket/prefix (bucket: 3-63")
    assert "\n" not in message


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("model: [1, 2]\n", r"model: expected a mapping of keys, got list"),
        ("model: []\n", r"model: expected a mapping of keys, got list"),
        ("model:\n", r"missing required key model\.preset"),
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


@pytest.mark.parametrize(
    ("text", "metric", "operator", "threshold"),
    [
        ("val_loss<=2.5", "val_loss", "<=", 2.5),
        (" loss < 3 ", "loss", "<", 3.0),
        ("val_loss >= 1e-3", "val_loss", ">=", 0.001),
        ("loss>-1", "loss", ">", -1.0),
    ],
)
def test_stop_at_grammar(text: str, metric: str, operator: str, threshold: float) -> None:
    condition = load_config(TINY_CONFIG, [f"train.stop_at={text}"]).train.stop_condition
    assert condition == StopCondition(metric, operator, threshold)


@pytest.mark.parametrize(
    ("condition", "value", "reached"),
    [
        (("val_loss", "<=", 2.5), 2.5, True),
        (("val_loss", "<=", 2.5), 2.4999, True),
        (("val_loss", "<=", 2.5), 2.5001, False),
        (("loss", "<", 2.5), 2.5, False),
        (("loss", "<", 2.5), 2.4, True),
        (("loss", ">=", 1.0), 1.0, True),
        (("loss", ">", 1.0), 1.0, False),
        # Nothing measured, or a diverged loss, never ends a run as if it had succeeded.
        (("val_loss", "<=", 2.5), None, False),
        (("val_loss", "<=", 2.5), float("nan"), False),
        (("loss", ">", 1.0), float("inf"), False),
    ],
)
def test_stop_condition_compares_as_written(condition: tuple[str, str, float], value: float | None,
                                            reached: bool) -> None:  # fmt: skip
    assert StopCondition(*condition).reached(value) is reached
    assert str(StopCondition("val_loss", "<=", 2.5)) == "val_loss<=2.5"


def test_new_keys_default_to_off() -> None:
    config = load_config(TINY_CONFIG)
    assert config.train.stop_at is None and config.train.stop_condition is None
    assert (config.output.tracking, config.output.tracking_uri, config.output.metrics_port) == (
        "none",
        None,
        None,
    )
    assert config.output.experiment == "trainstack"
    good = load_config(
        TINY_CONFIG,
        [
            "output.tracking=mlflow",
            "output.tracking_uri=https://mlflow.example:443",
            "output.metrics_port=9000",
        ],
    )
    assert (good.output.tracking_uri, good.output.metrics_port) == ("https://mlflow.example:443", 9000)


@pytest.mark.parametrize("text", ["val_loss", "val_loss=2.5", "val_loss<=low", "val_loss<=nan"])
def test_a_stop_at_error_says_what_it_got_once(text: str) -> None:
    """Issue 25 case 12: the message ended "..., got 'val_loss', got 'val_loss'"."""
    with pytest.raises(ConfigError) as error:
        load_config(TINY_CONFIG, [f"train.stop_at={text}"])
    assert str(error.value).count(", got ") == 1, str(error.value)
    assert str(error.value).endswith(f", got {text!r}")
