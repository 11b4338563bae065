"""The training config: YAML sections as pydantic models, each key typed with its default and range; a bad key
or value is one ConfigError line naming the dotted key and what is allowed. No torch: the stack imports it."""

from __future__ import annotations

import os
import re
import types
import typing
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, ValidationError
from pydantic_core import ErrorDetails

from trainer.stopping import StopCondition, parse_stop_at


class ConfigError(Exception):
    """A config that cannot be used; the message names the key and what is allowed."""


def padded_vocab_size(vocab_size: int) -> int:
    """The embedding's rows: the next multiple of VOCAB_MULTIPLE."""
    return -(-vocab_size // VOCAB_MULTIPLE) * VOCAB_MULTIPLE


def whole_number(name: str, value: str, allowed: str, minimum: int, maximum: int | None = None) -> int:
    """Digits only (no sign, space, underscore) in [minimum, maximum]; else ConfigError naming name and allowed."""
    in_range = re.fullmatch(r"[0-9]+", value) and int(value) >= minimum
    if not in_range or (maximum is not None and int(value) > maximum):
        raise ConfigError(f"{name}: expected {allowed}, got {value!r}")
    return int(value)


MODEL_PRESETS: dict[str, dict[str, int]] = {
    "tiny": {"n_layer": 2, "n_head": 2, "n_embd": 64},
    "mini": {"n_layer": 4, "n_head": 4, "n_embd": 128},
    "small": {"n_layer": 6, "n_head": 6, "n_embd": 384},
    "gpt2-124m": {"n_layer": 12, "n_head": 12, "n_embd": 768},
    "gpt2-350m": {"n_layer": 24, "n_head": 16, "n_embd": 1024},
    "gpt2-774m": {"n_layer": 36, "n_head": 20, "n_embd": 1280},
    "gpt2-1558m": {"n_layer": 48, "n_head": 25, "n_embd": 1600},
}

VOCAB_MULTIPLE = 64  # padded vocabulary: the embedding / head matmuls hit efficient tile sizes
GPT2_VOCAB_SIZE = 50257  # tiktoken's gpt2 encoding
BYTES_ENCODING = "bytes"  # data.encoding of the built-in byte-level encoding (trainer.dataset)
BYTES_VOCAB_SIZE = 257  # its tokens: 256 bytes and <|endoftext|>
SCIENTIFIC_NUMBER = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+")
# a tracking server, or SQLite (MLflow 3's local backend; the file store is deprecated)
TRACKING_URI_SCHEMES = ("http", "https", "sqlite")

# upstream: Amazon S3 User Guide, "Bucket naming rules" (general purpose buckets)
S3_SCHEME = "s3://"
# 3-63 of a-z 0-9 . -, a letter or digit at each end; no ".." and not an IPv4 address
_S3_BUCKET = re.compile(r"^(?!.*\.\.)(?!\d+\.\d+\.\d+\.\d+$)[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
S3_URL_SHAPE = (
    "s3://bucket/prefix (bucket: 3-63 lowercase letters, digits, '.' or '-', a letter or digit at each end, "
    "no '..', not an IP address; prefix: '/'-separated names, none empty, '.' or '..')"
)
S3_URL_RULE = f"a directory, or {S3_URL_SHAPE}"


def is_s3_url(text: str) -> bool:
    return text.startswith(S3_SCHEME)


def parse_s3_url(text: str) -> tuple[str, str]:
    """(bucket, prefix without '/' at either end; "" for the root); else ConfigError naming checkpoint.dir."""
    bucket, _, prefix = text.removeprefix(S3_SCHEME).partition("/")
    prefix = prefix.rstrip("/")
    names = prefix.split("/") if prefix else []
    bad_name = any(name in ("", ".", "..") or not name.isprintable() for name in names)
    if not is_s3_url(text) or not _S3_BUCKET.match(bucket) or bad_name:
        raise ConfigError(f"checkpoint.dir: expected {S3_URL_RULE}, got {text!r}")
    return bucket, prefix


def _local_path(value: str) -> str:
    """~user/... must name a user this machine knows: pathlib's expanduser raises for any other."""
    if value.startswith("~") and os.path.expanduser(value) == value:
        raise ValueError("names a user this machine does not know after ~ (allowed: ~/path, or no ~)")
    return value


def _directory(value: str) -> str:
    if "://" in value or value.lower().startswith("s3:"):
        raise ValueError("must be a local directory (an object store is for checkpoint.dir only)")
    return _local_path(value)


def _checkpoint_dir(value: str) -> str:
    if not value.strip():
        raise ValueError("must name a directory or an s3://bucket/prefix")
    # any URL, and a mistyped s3:// one ("s3:/b/x", "S3://..."), is not taken for a local directory
    if "://" in value or value.lower().startswith("s3:"):
        try:
            parse_s3_url(value)
        except ConfigError:
            raise ValueError(f"must be {S3_URL_RULE}") from None
    return value if is_s3_url(value) else _local_path(value)


def _tracking_uri(value: str) -> str:
    scheme, _, rest = value.partition("://")
    if scheme not in TRACKING_URI_SCHEMES or not rest:
        raise ValueError(
            "must be an http(s):// MLflow tracking server or a sqlite:/// store (e.g. sqlite:///runs/mlflow.db)"
        )
    if scheme == "sqlite" and not rest.startswith("/"):
        raise ValueError(
            "must name a file after sqlite:/// (three slashes, e.g. sqlite:////abs/path/mlflow.db)"
        )
    return value


def _not_blank(value: str) -> str:
    if not value.strip():
        raise ValueError("must not be empty")
    return value


def _number(value: Any) -> Any:
    """PyYAML (YAML 1.1) reads 1e-3 (no dot) as a string."""
    return float(value) if isinstance(value, str) and SCIENTIFIC_NUMBER.fullmatch(value.strip()) else value


# Strict: no coercion (true is not 1, "3" is not 3), except an integer for a number.
Number = Annotated[float, BeforeValidator(_number)]
Positive = Annotated[int, Field(gt=0)]
NonNegative = Annotated[int, Field(ge=0)]
PositiveNumber = Annotated[Number, Field(gt=0)]
NonNegativeNumber = Annotated[Number, Field(ge=0)]
UnitInterval = Annotated[Number, Field(ge=0, lt=1)]
Text = Annotated[str, AfterValidator(_not_blank)]
LocalPath = Annotated[str, AfterValidator(_local_path)]
Directory = Annotated[str, AfterValidator(_directory)]  # a local one: no URL


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, allow_inf_nan=False)


class ModelSection(_Section):
    preset: Literal[tuple(MODEL_PRESETS)]  # type: ignore[valid-type]  # MODEL_PRESETS' names, stated once
    n_layer: Positive | None = None  # None: the preset's value
    n_head: Positive | None = None
    n_embd: Positive | None = None
    block_size: Positive = 1024  # context length T
    dropout: UnitInterval = 0.0
    bias: bool = True


class DataSection(_Section):
    path: LocalPath  # a file, directory or glob, s3://bucket/prefix, hf://name, a save_to_disk dir; or hf_dataset
    encoding: str = "gpt2"  # a tiktoken encoding name, or "bytes" (built in, no download)
    cache_dir: Directory = "runs/cache"  # prepared token shards (trainer.prepare)
    val_fraction: Annotated[Number, Field(gt=0, lt=1)] = 0.1
    text_field: Text = "text"  # the text of a JSONL line or a Hugging Face dataset row
    workers: NonNegative = 0  # preparation processes; 0: every CPU the process may use
    shard_bytes: Positive = 64 * 1024 * 1024  # source bytes per token shard (about)
    hf_dataset: str | None = None  # a Hugging Face dataset name, used instead of path when set
    hf_config: str | None = None
    hf_split: str = "train"


class TrainSection(_Section):
    max_steps: Positive
    micro_batch_size: Positive = 8  # sequences per rank per forward/backward
    grad_accum_steps: Positive = 1
    lr: PositiveNumber = 6e-4
    min_lr: NonNegativeNumber = 6e-5
    warmup_steps: NonNegative = 100
    weight_decay: NonNegativeNumber = 0.1
    beta1: UnitInterval = 0.9
    beta2: UnitInterval = 0.95
    grad_clip: NonNegativeNumber = 1.0  # 0 disables clipping
    seed: int = 1337
    precision: Literal["auto", "bf16", "fp32"] = "auto"  # auto: bf16 on GPU, fp32 on CPU
    zero_stage: Annotated[int, Field(ge=0, le=3)] = 0
    compile: bool = False  # torch.compile, GPU only
    eval_every: NonNegative = 100  # 0: only at the end
    eval_batches: Positive = 10
    # early stopping: end the run successfully once e.g. "val_loss<=2.5" holds
    stop_at: Annotated[str, AfterValidator(lambda text: parse_stop_at(text) and text)] | None = None

    @property
    def stop_condition(self) -> StopCondition | None:
        return None if self.stop_at is None else parse_stop_at(self.stop_at)


class CheckpointSection(_Section):
    dir: Annotated[str, AfterValidator(_checkpoint_dir)]  # a directory, or s3://bucket/prefix
    every_steps: Positive
    keep_last: Positive = 3
    # checkpoints there but none verifies. fail: exit 2 naming them (step 0 would silently throw the run away)
    on_unreadable: Literal["fail", "restart"] = "fail"


class OutputSection(_Section):
    dir: Directory
    log_every: Positive = 10
    progress: Literal["auto", "on", "off"] = "auto"  # auto: a progress bar when stdout is a terminal
    peak_tflops: PositiveNumber | None = None  # per-device peak for MFU; None: the GPU table
    tracking: Literal["none", "mlflow"] = "none"  # mlflow: params, metrics and artifacts to MLflow
    tracking_uri: Annotated[str, AfterValidator(_tracking_uri)] | None = None  # None: output.dir/mlflow
    experiment: Text = "trainstack"  # MLflow experiment name
    metrics_port: Annotated[int, Field(ge=1, le=65535)] | None = None  # rank 0's /metrics; None: off


class TrainConfig(_Section):
    model: ModelSection
    data: DataSection
    train: TrainSection
    checkpoint: CheckpointSection
    output: OutputSection

    def to_dict(self) -> dict[str, Any]:
        """The resolved nested dict, preset shapes filled in."""
        resolved = self.model_dump()
        resolved["model"].update(self.model_shape())
        return resolved

    def model_shape(self) -> dict[str, int]:
        """n_layer, n_head, n_embd: the preset's, with any explicit model.* value on top."""
        preset = MODEL_PRESETS[self.model.preset]
        return {
            name: preset[name] if getattr(self.model, name) is None else getattr(self.model, name)
            for name in preset
        }

    def parameter_count(self, vocab_size: int | None = None) -> int:
        """GPT's parameters without building it; vocab_size None: the bytes encoding's, else GPT-2's."""
        if vocab_size is None:
            vocab_size = BYTES_VOCAB_SIZE if self.data.encoding == BYTES_ENCODING else GPT2_VOCAB_SIZE
        shape = self.model_shape()
        width, layers, bias = shape["n_embd"], shape["n_layer"], int(self.model.bias)
        per_block = 12 * width * width + 2 * width + 11 * width * bias
        embeddings = (padded_vocab_size(vocab_size) + self.model.block_size) * width
        return embeddings + layers * per_block + width + width * bias


SECTIONS: dict[str, type[_Section]] = {
    name: typing.cast(type[_Section], field.annotation) for name, field in TrainConfig.model_fields.items()
}
_NAMES = {int: "integer", float: "number", str: "string", bool: "boolean", type(None): "null"}
_BOUNDS = {"gt": ">", "ge": ">=", "lt": "<", "le": "<="}


def _type_name(annotation: Any) -> str:
    """In words: "integer or null", "one of auto, bf16, fp32"."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is Annotated:
        return _type_name(args[0])
    if origin is Literal:
        return f"one of {', '.join(map(str, args))}"
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(arg) for arg in args)
    return _NAMES[annotation]


def _bounds(item: Any) -> list[str]:
    """The Field(gt=..., lt=...) inside an annotation, e.g. ["> 0", "< 1"]."""
    found = [
        f"{sign} {getattr(m, k)}"
        for m in getattr(item, "metadata", ())
        for k, sign in _BOUNDS.items()
        if hasattr(m, k)
    ]
    return found + [bound for arg in typing.get_args(item) for bound in _bounds(arg)]


def _error_line(error: ErrorDetails) -> str:
    """pydantic's error as the one line: the dotted key, what is wrong, what is allowed."""
    loc, kind, value = error["loc"], error["type"], error["input"]
    dotted = ".".join(map(str, loc))
    if kind == "extra_forbidden":
        return f"unknown key {dotted}; allowed keys in '{loc[0]}': {', '.join(sorted(SECTIONS[str(loc[0])].model_fields))}"
    if kind == "missing":
        return f"missing required key {dotted}"
    if len(loc) == 1:
        return f"{dotted}: expected a mapping of keys, got {type(value).__name__}"
    field = SECTIONS[str(loc[0])].model_fields[str(loc[1])]
    if kind == "value_error":
        return f"{dotted}: {error.get('ctx', {}).get('error')}, got {value!r}"
    if kind == "finite_number":
        return f"{dotted}: must be a finite number, got {value!r}"
    if kind == "literal_error":
        return f"{dotted}: must be {_type_name(field.annotation)}, got {value!r}"
    if kind in ("greater_than", "greater_than_equal", "less_than", "less_than_equal"):
        bounds = _bounds(field) + _bounds(field.annotation)
        return f"{dotted}: must be {' and '.join(bounds)}, got {value!r}"
    shown = "null" if value is None else f"{type(value).__name__} {value!r}"
    return f"{dotted}: expected {_type_name(field.annotation)}, got {shown}"


def _check_consistency(config: TrainConfig) -> None:
    shape, train, output, data = config.model_shape(), config.train, config.output, config.data
    condition = train.stop_condition
    rules = [
        (shape["n_embd"] % shape["n_head"],
         f"model.n_embd ({shape['n_embd']}) must be divisible by model.n_head ({shape['n_head']})"),
        (train.min_lr > train.lr, f"train.min_lr ({train.min_lr}) must not exceed train.lr ({train.lr})"),
        (condition is not None and condition.metric == "val_loss" and not train.eval_every,
         "train.stop_at: val_loss is measured only with train.eval_every > 0 (it is 0)"),
        (output.tracking_uri is not None and output.tracking == "none",
         "output.tracking_uri: set while output.tracking is none; set output.tracking=mlflow or drop the URI"),
        (not data.path and data.hf_dataset is None,
         "data.path: must name a file, a directory, a glob, s3://bucket/prefix or hf://name (or set data.hf_dataset)"),
    ]  # fmt: skip
    for broken, message in rules:
        if broken:
            raise ConfigError(message)


def _apply_override(tree: dict[str, Any], override: str) -> None:
    """One 'section.key=value'; the value parsed as a YAML scalar."""
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
    if not isinstance(tree.setdefault(section, {}), dict):
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
    if unknown := sorted(set(tree) - set(SECTIONS)):
        raise ConfigError(f"unknown section {unknown[0]!r}; allowed sections: {', '.join(SECTIONS)}")
    try:
        config = TrainConfig.model_validate(
            {name: {} if tree.get(name) is None else tree[name] for name in SECTIONS}
        )
    except ValidationError as invalid:
        # the first as a reader goes: section by section, an unknown key before the others
        order = list(SECTIONS)
        first = min(
            invalid.errors(), key=lambda e: (order.index(str(e["loc"][0])), e["type"] != "extra_forbidden")
        )
        raise ConfigError(_error_line(first)) from None
    _check_consistency(config)
    return config
