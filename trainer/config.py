"""Typed, strictly validated training configuration.

This module imports only the standard library and PyYAML: the Pulumi program imports it to validate a
training config before it declares any cluster resource.

A config is a YAML mapping of sections (``model``, ``data``, ``train``, ``checkpoint``, ``output``); every
key is declared below with its type and default. Unknown keys, wrong types and out-of-range values raise
``ConfigError`` with one message naming the dotted key and what is allowed.
"""

from __future__ import annotations

import dataclasses
import math
import re
import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml


class ConfigError(Exception):
    """A config that cannot be used; the message names the key and what is allowed."""


def padded_vocab_size(vocab_size: int) -> int:
    """The embedding's rows for a tokenizer of vocab_size tokens: the next multiple of VOCAB_MULTIPLE."""
    return -(-vocab_size // VOCAB_MULTIPLE) * VOCAB_MULTIPLE


def whole_number(name: str, value: str, allowed: str, minimum: int, maximum: int | None = None) -> int:
    """value (an environment variable's text, say) as an integer in [minimum, maximum]; else ConfigError
    naming `name` and `allowed`. Only digits count: no sign, no spaces, no underscores."""
    in_range = re.fullmatch(r"[0-9]+", value) and int(value) >= minimum
    if not in_range or (maximum is not None and int(value) > maximum):
        raise ConfigError(f"{name}: expected {allowed}, got {value!r}")
    return int(value)


# Transformer shapes by size. block_size, vocabulary and dropout are separate keys (model.*).
MODEL_PRESETS: dict[str, dict[str, int]] = {
    "tiny": {"n_layer": 2, "n_head": 2, "n_embd": 64},
    "mini": {"n_layer": 4, "n_head": 4, "n_embd": 128},
    "small": {"n_layer": 6, "n_head": 6, "n_embd": 384},
    "gpt2-124m": {"n_layer": 12, "n_head": 12, "n_embd": 768},
    "gpt2-350m": {"n_layer": 24, "n_head": 16, "n_embd": 1024},
    "gpt2-774m": {"n_layer": 36, "n_head": 20, "n_embd": 1280},
    "gpt2-1558m": {"n_layer": 48, "n_head": 25, "n_embd": 1600},
}

VOCAB_MULTIPLE = 64  # the model pads the vocabulary so the embedding / head matmuls hit efficient tile sizes
GPT2_VOCAB_SIZE = 50257  # tiktoken's gpt2 encoding
BYTES_ENCODING = "bytes"  # data.encoding of the built-in byte-level encoding (trainer.dataset)
BYTES_VOCAB_SIZE = 257  # its tokens: 256 bytes and <|endoftext|>
PRECISIONS = ("auto", "bf16", "fp32")
SCIENTIFIC_NUMBER = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+")
PROGRESS_MODES = ("auto", "on", "off")
TRACKERS = ("none", "mlflow")
# checkpoint.on_unreadable: what a run does when checkpoint.dir holds checkpoints and none of them verifies.
ON_UNREADABLE = ("fail", "restart")
# MLflow tracking URIs the trainer image can use: a tracking server, or a local SQLite store (MLflow 3's
# recommended local backend; the file store is deprecated).
TRACKING_URI_SCHEMES = ("http", "https", "sqlite")
# train.stop_at: "<metric> <operator> <number>", e.g. "val_loss<=2.5". Only metrics every rank agrees on:
# loss (the step's training loss, averaged over ranks, at each logged step) and val_loss (each evaluation).
STOP_METRICS = ("loss", "val_loss")
STOP_OPERATORS = ("<=", ">=", "<", ">")
_STOP_AT = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_]*)\s*(<=|>=|<|>|==|=|!=)?\s*(.*?)\s*$")


def _positive(value: float) -> str | None:
    return None if value > 0 else "must be > 0"


def _non_negative(value: float) -> str | None:
    return None if value >= 0 else "must be >= 0"


def _fraction(value: float) -> str | None:
    return None if 0 < value < 1 else "must be between 0 and 1 (exclusive)"


def _unit_interval(value: float) -> str | None:
    return None if 0 <= value < 1 else "must be in [0, 1)"


def _one_of(*allowed: object) -> Callable[[Any], str | None]:
    def check(value: Any) -> str | None:
        return None if value in allowed else f"must be one of {', '.join(map(str, allowed))}"

    return check


def _port(value: int) -> str | None:
    return None if 1 <= value <= 65535 else "must be a TCP port between 1 and 65535"


def _not_blank(value: str) -> str | None:
    return None if value.strip() else "must not be empty"


# checkpoint.dir as an object store: s3://bucket/prefix (any S3-compatible store). Bucket names follow Amazon
# S3's rules for general purpose buckets ("Bucket naming rules", S3 User Guide): 3-63 characters, lowercase
# letters, digits, dots and hyphens, starting and ending with a letter or digit, not an IPv4 address.
S3_SCHEME = "s3://"
_S3_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
_IPV4 = re.compile(r"^\d+\.\d+\.\d+\.\d+$")
S3_URL_SHAPE = (
    "s3://bucket/prefix (bucket: 3-63 lowercase letters, digits, '.' or '-'; prefix: '/'-separated names, "
    "none empty, '.' or '..')"
)
S3_URL_RULE = f"a directory, or {S3_URL_SHAPE}"


def is_s3_url(text: str) -> bool:
    """Whether a checkpoint.dir names an object store (s3://...) rather than a directory."""
    return text.startswith(S3_SCHEME)


def parse_s3_url(text: str) -> tuple[str, str]:
    """(bucket, prefix) of s3://bucket/prefix; the prefix without leading or trailing '/', "" for the
    bucket's root. ConfigError (naming checkpoint.dir and S3_URL_RULE) for anything else."""
    bucket, _, prefix = text.removeprefix(S3_SCHEME).partition("/")
    prefix = prefix.rstrip("/")
    names = prefix.split("/") if prefix else []
    bad_name = any(name in ("", ".", "..") or not name.isprintable() for name in names)
    if (
        not is_s3_url(text)
        or not _S3_BUCKET.match(bucket)
        or ".." in bucket
        or _IPV4.match(bucket)
        or bad_name
    ):
        raise ConfigError(f"checkpoint.dir: expected {S3_URL_RULE}, got {text!r}")
    return bucket, prefix


def _checkpoint_dir(value: str) -> str | None:
    if not value.strip():
        return "must name a directory or an s3://bucket/prefix"
    # Any URL, and what looks like a mistyped s3:// one ("s3:/b/x", "S3://..."), is checked as an S3 URL
    # rather than taken for a local directory.
    if "://" in value or value.lower().startswith("s3:"):
        try:
            parse_s3_url(value)
        except ConfigError:
            return f"must be {S3_URL_RULE}"
    return None


def _tracking_uri(value: str) -> str | None:
    scheme, _, rest = value.partition("://")
    if scheme not in TRACKING_URI_SCHEMES or not rest:
        return "must be an http(s):// MLflow tracking server or a sqlite:/// store (e.g. sqlite:///runs/mlflow.db)"
    if scheme == "sqlite" and not rest.startswith("/"):
        return "must name a file after sqlite:/// (three slashes, e.g. sqlite:////abs/path/mlflow.db)"
    return None


@dataclass(frozen=True)
class StopCondition:
    """train.stop_at parsed: stop when `metric operator threshold` holds (e.g. val_loss <= 2.5)."""

    metric: str
    operator: str
    threshold: float

    def reached(self, value: float | None) -> bool:
        """Whether a measured value meets the condition; None or NaN never does."""
        if value is None or not math.isfinite(value):
            return False
        comparisons = {
            "<=": value <= self.threshold,
            ">=": value >= self.threshold,
            "<": value < self.threshold,
            ">": value > self.threshold,
        }
        return comparisons[self.operator]

    def __str__(self) -> str:
        return f"{self.metric}{self.operator}{self.threshold:g}"


def parse_stop_at(text: str) -> StopCondition:
    """'<metric> <operator> <number>' (spaces optional), metric one of STOP_METRICS, operator one of
    STOP_OPERATORS, a finite number; ConfigError otherwise."""
    grammar = (
        f"expected '<metric> <operator> <number>' with metric one of {', '.join(STOP_METRICS)} and operator "
        f"one of {' '.join(STOP_OPERATORS)}, e.g. 'val_loss<=2.5'"
    )
    match = _STOP_AT.fullmatch(text)
    if match is None:
        raise ConfigError(f"train.stop_at: {grammar}, got {text!r}")
    metric, operator, number = match.groups()
    if metric not in STOP_METRICS:
        raise ConfigError(
            f"train.stop_at: unknown metric {metric!r}; the trainer computes {', '.join(STOP_METRICS)}"
        )
    if operator not in STOP_OPERATORS:
        raise ConfigError(f"train.stop_at: {grammar}, got {text!r}")
    try:
        threshold = float(number)
    except ValueError:
        raise ConfigError(f"train.stop_at: {grammar}, got {text!r}") from None
    if not math.isfinite(threshold):
        raise ConfigError(f"train.stop_at: the threshold must be a finite number, got {number!r}")
    return StopCondition(metric, operator, threshold)


def _stop_at(value: str) -> str | None:
    try:
        parse_stop_at(value)
    except ConfigError as error:  # _build_section adds ", got <value>" itself: drop parse_stop_at's own
        return re.sub(r", got .*$", "", str(error).removeprefix("train.stop_at: "))
    return None


def _key(default: Any = dataclasses.MISSING, check: Callable[[Any], str | None] | None = None) -> Any:
    """A config key: its default (none means required) and an optional range check."""
    if isinstance(default, list | dict):
        raise TypeError("mutable defaults are not supported")
    return field(default=default, metadata={"check": check})


@dataclass(frozen=True)
class ModelSection:
    preset: str = _key(check=_one_of(*MODEL_PRESETS))
    n_layer: int | None = _key(None, _positive)  # None: the preset's value
    n_head: int | None = _key(None, _positive)
    n_embd: int | None = _key(None, _positive)
    block_size: int = _key(1024, _positive)  # context length T
    dropout: float = _key(0.0, _unit_interval)
    bias: bool = _key(True)


@dataclass(frozen=True)
class DataSection:
    # A file, directory or glob (*.txt, *.jsonl, *.bin), s3://bucket/prefix, hf://name, or a directory written
    # by datasets' save_to_disk (trainer.sources); ignored with hf_dataset.
    path: str = _key()
    encoding: str = _key("gpt2")  # a tiktoken encoding name, or "bytes" (built in, no download)
    cache_dir: str = _key("runs/cache")  # prepared token shards (trainer.prepare)
    val_fraction: float = _key(0.1, _fraction)
    text_field: str = _key("text", _not_blank)  # the text of a JSONL line or a Hugging Face dataset row
    workers: int = _key(0, _non_negative)  # preparation processes; 0: every CPU the process may use
    shard_bytes: int = _key(64 * 1024 * 1024, _positive)  # source bytes per token shard (about)
    hf_dataset: str | None = _key(None)  # a Hugging Face dataset name, used instead of path when set
    hf_config: str | None = _key(None)
    hf_split: str = _key("train")


@dataclass(frozen=True)
class TrainSection:
    max_steps: int = _key(check=_positive)
    micro_batch_size: int = _key(8, _positive)  # sequences per rank per forward/backward
    grad_accum_steps: int = _key(1, _positive)
    lr: float = _key(6e-4, _positive)
    min_lr: float = _key(6e-5, _non_negative)
    warmup_steps: int = _key(100, _non_negative)
    weight_decay: float = _key(0.1, _non_negative)
    beta1: float = _key(0.9, _unit_interval)
    beta2: float = _key(0.95, _unit_interval)
    grad_clip: float = _key(1.0, _non_negative)  # 0 disables clipping
    seed: int = _key(1337)
    precision: str = _key("auto", _one_of(*PRECISIONS))  # auto: bf16 on GPU, fp32 on CPU
    zero_stage: int = _key(0, _one_of(0, 1, 2, 3))
    compile: bool = _key(False)  # torch.compile, GPU only
    eval_every: int = _key(100, _non_negative)  # 0: only at the end
    eval_batches: int = _key(10, _positive)
    # Early stopping: end the run successfully once e.g. "val_loss<=2.5" holds (see parse_stop_at).
    stop_at: str | None = _key(None, _stop_at)

    @property
    def stop_condition(self) -> StopCondition | None:
        """train.stop_at parsed, or None when unset."""
        return None if self.stop_at is None else parse_stop_at(self.stop_at)


@dataclass(frozen=True)
class CheckpointSection:
    dir: str = _key(check=_checkpoint_dir)  # a directory, or s3://bucket/prefix (trainer.s3_storage)
    every_steps: int = _key(check=_positive)
    keep_last: int = _key(3, _positive)
    # fail: exit 2 naming them (restarting from step 0 would silently throw the run away); restart: from step 0
    on_unreadable: str = _key("fail", _one_of(*ON_UNREADABLE))


@dataclass(frozen=True)
class OutputSection:
    dir: str = _key()
    log_every: int = _key(10, _positive)
    progress: str = _key("auto", _one_of(*PROGRESS_MODES))  # auto: a progress bar when stdout is a terminal
    peak_tflops: float | None = _key(None, _positive)  # per-device peak for MFU; None: the GPU table
    tracking: str = _key("none", _one_of(*TRACKERS))  # mlflow: params, metrics and artifacts to MLflow
    tracking_uri: str | None = _key(None, _tracking_uri)  # None: a SQLite store under output.dir/mlflow
    experiment: str = _key("trainstack", _not_blank)  # MLflow experiment name
    metrics_port: int | None = _key(None, _port)  # rank 0 serves Prometheus /metrics here; None: off


@dataclass(frozen=True)
class TrainConfig:
    model: ModelSection
    data: DataSection
    train: TrainSection
    checkpoint: CheckpointSection
    output: OutputSection

    def to_dict(self) -> dict[str, Any]:
        """The resolved nested dict, preset shapes filled in."""
        resolved = dataclasses.asdict(self)
        resolved["model"].update(self.model_shape())
        return resolved

    def model_shape(self) -> dict[str, int]:
        """n_layer, n_head, n_embd: the preset's, with any explicit model.* value on top."""
        shape = dict(MODEL_PRESETS[self.model.preset])
        for name in shape:
            explicit = getattr(self.model, name)
            if explicit is not None:
                shape[name] = explicit
        return shape

    def parameter_count(self, vocab_size: int | None = None) -> int:
        """Parameters of trainer.model.GPT for this config and a tokenizer of vocab_size tokens (all of them,
        position embeddings included; the output head shares the token embedding), without building it:
        V·C + T·C + L·(12·C² + 2·C + 11·C·bias) + C + C·bias for vocabulary V (padded), width C, context T,
        L blocks (QKV 3C², attention projection C², MLP 8C², two LayerNorms), the final LayerNorm.
        vocab_size None: the bytes encoding's, else GPT-2's (a tiktoken encoding's size needs its files)."""
        if vocab_size is None:
            vocab_size = BYTES_VOCAB_SIZE if self.data.encoding == BYTES_ENCODING else GPT2_VOCAB_SIZE
        shape = self.model_shape()
        width, layers, bias = shape["n_embd"], shape["n_layer"], int(self.model.bias)
        per_block = 12 * width * width + 2 * width + 11 * width * bias
        embeddings = (padded_vocab_size(vocab_size) + self.model.block_size) * width
        return embeddings + layers * per_block + width + width * bias


SECTIONS: dict[str, type] = {
    "model": ModelSection,
    "data": DataSection,
    "train": TrainSection,
    "checkpoint": CheckpointSection,
    "output": OutputSection,
}


def _type_name(annotation: Any) -> str:
    names = {int: "integer", float: "number", str: "string", bool: "boolean", type(None): "null"}
    if isinstance(annotation, types.UnionType):
        return " or ".join(_type_name(arg) for arg in typing.get_args(annotation))
    return names[annotation]


def _coerce(key: str, value: Any, annotation: Any) -> Any:
    """value if it has the declared type (an integer is accepted for a number); else ConfigError."""
    allowed = typing.get_args(annotation) if isinstance(annotation, types.UnionType) else (annotation,)
    for kind in allowed:
        if kind is type(None) and value is None:
            return None
        # bool is a subclass of int in Python: never accept true/false for a number.
        if kind is bool and isinstance(value, bool):
            return value
        if kind is int and isinstance(value, int) and not isinstance(value, bool):
            return value
        if kind is float and isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        # PyYAML (YAML 1.1) reads 1e-3 (no dot) as a string: accept such a number.
        if kind is float and isinstance(value, str) and SCIENTIFIC_NUMBER.fullmatch(value.strip()):
            return float(value)
        if kind is str and isinstance(value, str):
            return value
    shown = "null" if value is None else f"{type(value).__name__} {value!r}"
    raise ConfigError(f"{key}: expected {_type_name(annotation)}, got {shown}")


def _build_section(name: str, cls: type, values: Mapping[str, Any]) -> Any:
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise ConfigError(
            f"unknown key {name}.{unknown[0]}; allowed keys in '{name}': {', '.join(sorted(fields))}"
        )
    kwargs: dict[str, Any] = {}
    for key, spec in fields.items():
        dotted = f"{name}.{key}"
        if key not in values:
            if spec.default is dataclasses.MISSING:
                raise ConfigError(f"missing required key {dotted}")
            continue
        value = _coerce(dotted, values[key], hints[key])
        check = spec.metadata.get("check")
        problem = check(value) if check is not None and value is not None else None
        if problem:
            raise ConfigError(f"{dotted}: {problem}, got {value!r}")
        kwargs[key] = value
    return cls(**kwargs)


def _check_consistency(config: TrainConfig) -> None:
    shape = config.model_shape()
    if shape["n_embd"] % shape["n_head"]:
        raise ConfigError(
            f"model.n_embd ({shape['n_embd']}) must be divisible by model.n_head ({shape['n_head']})"
        )
    if config.train.min_lr > config.train.lr:
        raise ConfigError(
            f"train.min_lr ({config.train.min_lr}) must not exceed train.lr ({config.train.lr})"
        )
    condition = config.train.stop_condition
    if condition is not None and condition.metric == "val_loss" and not config.train.eval_every:
        raise ConfigError(
            f"train.stop_at: {condition.metric} is measured only with train.eval_every > 0 (it is 0)"
        )
    if config.output.tracking_uri is not None and config.output.tracking == "none":
        raise ConfigError(
            "output.tracking_uri: set while output.tracking is none; set output.tracking=mlflow or drop the URI"
        )
    if not config.data.path and config.data.hf_dataset is None:
        raise ConfigError(
            "data.path: must name a file, a directory, a glob, s3://bucket/prefix or hf://name "
            "(or set data.hf_dataset)"
        )


def _apply_override(tree: dict[str, Any], override: str) -> None:
    """Set one 'section.key=value' override; the value is parsed as a YAML scalar."""
    dotted, sep, raw = override.partition("=")
    parts = dotted.strip().split(".")
    if not sep or len(parts) != 2 or not all(parts):
        raise ConfigError(f"override {override!r}: expected section.key=value, e.g. train.max_steps=100")
    section, key = parts
    if section not in SECTIONS:
        raise ConfigError(
            f"override {override!r}: unknown section {section!r}; allowed: {', '.join(SECTIONS)}"
        )
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw  # not a YAML scalar (e.g. a glob with brackets): keep the text
    if isinstance(value, dict | list):
        raise ConfigError(f"override {override!r}: the value must be a scalar")
    tree.setdefault(section, {})
    if not isinstance(tree[section], dict):
        raise ConfigError(f"{section}: expected a mapping of keys, got {type(tree[section]).__name__}")
    tree[section][key] = value


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except OSError as error:
        raise ConfigError(f"cannot read config file {path}: {error.strerror}") from None
    try:
        tree = yaml.safe_load(text)
    except yaml.YAMLError as error:
        where = getattr(error, "problem_mark", None)
        line = f" (line {where.line + 1})" if where is not None else ""
        raise ConfigError(f"config file {path} is not valid YAML{line}") from None
    if tree is None:
        return {}
    if not isinstance(tree, dict):
        raise ConfigError(f"config file {path}: expected a mapping of sections, got {type(tree).__name__}")
    return tree


def load_config(path: str | Path | None, overrides: list[str] | None = None) -> TrainConfig:
    """Read, override and validate a config. path None: start from the overrides alone."""
    tree = _read_yaml(Path(path)) if path is not None else {}
    for override in overrides or []:
        _apply_override(tree, override)
    unknown = sorted(set(tree) - set(SECTIONS))
    if unknown:
        raise ConfigError(f"unknown section {unknown[0]!r}; allowed sections: {', '.join(SECTIONS)}")
    sections: dict[str, Any] = {}
    for name, cls in SECTIONS.items():
        values = tree.get(name, {})
        if values is None:
            values = {}
        if not isinstance(values, dict):
            raise ConfigError(f"{name}: expected a mapping of keys, got {type(values).__name__}")
        sections[name] = _build_section(name, cls, values)
    config = TrainConfig(**sections)
    _check_consistency(config)
    return config
