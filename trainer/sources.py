"""Where a corpus comes from (files, s3://, hf://, a save_to_disk directory), cut into units of a shard each.
The fingerprint (names, sizes, times, ETags) keys the prepared directory without reading the corpus; units
depend on the source alone, so a resumed preparation writes what an uninterrupted one would."""

from __future__ import annotations

import glob
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from trainer.config import S3_URL_SHAPE, ConfigError, DataSection, parse_s3_url
from trainer.shards import DataError

HF_SCHEME = "hf://"
TEXT_SUFFIXES = {".txt": "text", ".jsonl": "jsonl", ".bin": "bin"}
PIECE_CHARS = 1 << 16  # text is handed to the encoder in pieces of about this many characters
HF_ROW_BYTES = 2048  # rows of a Hugging Face dataset per shard: data.shard_bytes / this
ENDPOINT_VARIABLES = ("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL")


@dataclass(frozen=True)
class Unit:
    """Bytes [start, stop) of a file, rows of a dataset (hf), or a token file (bin); last: end-of-text follows."""

    kind: str
    location: str
    start: int
    stop: int
    last: bool = True


@dataclass(frozen=True)
class Source:
    describe: str
    fingerprint: str
    units: tuple[Unit, ...]
    text_field: str
    s3_url: str | None = None
    hf: tuple[str, str | None, str, bool] | None = None  # name or directory, config, split, from disk


def s3_client(what: str) -> Any:
    """boto3's client from the AWS environment (an endpoint: path-style); ConfigError naming `what` if refused."""
    import boto3
    from botocore.config import Config
    from botocore.exceptions import BotoCoreError

    endpoint = next((os.environ[name] for name in ENDPOINT_VARIABLES if os.environ.get(name)), None)
    config = Config(s3={"addressing_style": "path"}) if endpoint else None
    try:
        return boto3.session.Session().client("s3", config=config)
    except (ValueError, BotoCoreError) as error:
        raise ConfigError(f"{what}: cannot use the S3 client: {error}") from None


def _kind(name: str) -> str:
    return TEXT_SUFFIXES.get(Path(name).suffix, "text")


def _one_kind(describe: str, kinds: set[str]) -> None:
    if "bin" in kinds and len(kinds) > 1:
        raise DataError(f"data.path: {describe} mixes token files (*.bin) with text; use one or the other")


def _is_saved_dataset(path: Path) -> bool:
    return path.is_dir() and any((path / name).is_file() for name in ("dataset_dict.json", "state.json"))


def find_text_files(path: str) -> list[Path]:
    """A file, every *.txt, *.jsonl or *.bin under a directory, or a glob's matches."""
    target = Path(path).expanduser()
    if target.is_file():
        return [target]
    if target.is_dir():
        files = sorted(p for p in target.rglob("*") if p.is_file() and p.suffix in TEXT_SUFFIXES)
        empty = f"directory {path} holds no *.txt, *.jsonl or *.bin files"
    elif glob.has_magic(path):
        files = sorted(
            Path(p) for p in glob.glob(os.path.expanduser(path), recursive=True) if Path(p).is_file()
        )
        empty = f"glob {path!r} matches no files"
    else:
        raise DataError(f"data.path: no such file or directory: {path}")
    if not files:
        raise DataError(f"data.path: {empty}")
    return files


def _cut(fd: int, size: int, shard_bytes: int) -> list[tuple[int, int]]:
    """A file's ranges of about shard_bytes, all but the last ending just after a newline."""
    ranges, start = [], 0
    while size - start > shard_bytes:
        position = start + shard_bytes
        while position < size:
            window = os.pread(fd, 1 << 16, position)
            newline = window.find(b"\n")
            if newline >= 0:
                position += newline + 1
                break
            position += len(window)
        position = min(position, size)
        ranges.append((start, position))
        start = position
    if start < size:
        ranges.append((start, size))
    return ranges


def _file_units(files: list[Path], shard_bytes: int) -> list[Unit]:
    units = []
    for file in files:
        kind, size = _kind(file.name), file.stat().st_size
        if kind == "bin":
            units.append(Unit("bin", str(file), 0, size))
            continue
        with file.open("rb") as handle:
            ranges = _cut(handle.fileno(), size, shard_bytes)
        units += [Unit(kind, str(file), a, b, b == size) for a, b in ranges]
    return units


def local_source(data: DataSection) -> Source:
    files = find_text_files(data.path)
    if all(f.stat().st_size == 0 for f in files):
        raise DataError(f"data.path: {data.path} is empty: {len(files)} file(s), 0 bytes")
    _one_kind(data.path, {_kind(f.name) for f in files})
    identity = [(str(f.resolve()), f.stat().st_size, f.stat().st_mtime_ns) for f in files]
    units = [u for u in _file_units(files, data.shard_bytes) if u.stop > u.start or u.kind == "bin"]
    return Source(
        f"{len(files)} file(s) at {data.path}", _digest(["files", identity]), tuple(units), data.text_field
    )


def s3_source(data: DataSection) -> Source:
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        bucket, prefix = parse_s3_url(data.path)
    except ConfigError:
        raise DataError(f"data.path: expected {S3_URL_SHAPE}, got {data.path!r}") from None
    client = s3_client("data.path")
    objects: list[dict[str, Any]] = []
    try:
        for page in client.get_paginator("list_objects_v2").paginate(
            Bucket=bucket, Prefix=f"{prefix}/" if prefix else ""
        ):
            objects += page.get("Contents", [])
    except (BotoCoreError, ClientError) as error:
        raise DataError(
            f"data.path: cannot list {data.path} at {client.meta.endpoint_url}: {error}"
        ) from None
    objects = sorted(
        (o for o in objects if Path(o["Key"]).suffix in TEXT_SUFFIXES and o["Size"] > 0),
        key=lambda o: o["Key"],
    )
    if not objects:
        raise DataError(f"data.path: {data.path} holds no non-empty *.txt, *.jsonl or *.bin objects")
    _one_kind(data.path, {_kind(o["Key"]) for o in objects})
    units = tuple(Unit(_kind(o["Key"]), o["Key"], 0, int(o["Size"])) for o in objects)
    identity = [(o["Key"], o["Size"], o.get("ETag", "")) for o in objects]
    return Source(
        f"{len(objects)} object(s) at {data.path}",
        _digest(["s3", bucket, identity]),
        units,
        data.text_field,
        s3_url=data.path,
    )


def load_hf(hf: tuple[str, str | None, str, bool]) -> Any:
    """The dataset split a Source's hf names (in a preparation worker, too)."""
    import datasets

    name, config, split, from_disk = hf
    if from_disk:
        loaded = datasets.load_from_disk(name)
        return loaded[split] if isinstance(loaded, datasets.DatasetDict) else loaded
    return datasets.load_dataset(name, config, split=split, token=os.environ.get("HF_TOKEN") or None)


def hf_source(data: DataSection) -> Source:
    """data.hf_dataset or hf://name from the hub, or a save_to_disk directory in data.path."""
    try:
        import datasets  # noqa: F401
    except ImportError:
        raise DataError("data.hf_dataset needs the 'datasets' package: pip install datasets") from None
    from_disk = data.hf_dataset is None and not data.path.startswith(HF_SCHEME)
    name = data.hf_dataset or data.path.removeprefix(HF_SCHEME)
    hf = (str(Path(name).expanduser()) if from_disk else name, data.hf_config, data.hf_split, from_disk)
    try:
        dataset = load_hf(hf)
    except KeyError:
        raise DataError(f"data.hf_split: {name} has no split {data.hf_split!r}") from None
    except Exception as error:
        raise DataError(f"data.hf_dataset: cannot load {name!r} split {data.hf_split!r}: {error}") from None
    if data.text_field not in dataset.column_names:
        raise DataError(
            f"data.text_field: {data.text_field!r} is not a column of {name!r}; "
            f"columns: {', '.join(dataset.column_names)}"
        )
    if (rows := len(dataset)) == 0:
        raise DataError(f"data.hf_dataset: {name!r} split {data.hf_split!r} is empty: 0 rows")
    step = max(1, data.shard_bytes // HF_ROW_BYTES)
    units = tuple(Unit("hf", name, a, min(a + step, rows)) for a in range(0, rows, step))
    identity = ["hf", name if not from_disk else "disk", data.hf_config, data.hf_split, dataset._fingerprint]
    return Source(f"Hugging Face dataset {name}", _digest(identity), units, data.text_field, hf=hf)


def resolve_source(data: DataSection) -> Source:
    if data.path.lower().startswith("s3:"):  # s3://, and a mistyped S3:// or s3:/ too
        return s3_source(data)
    if data.hf_dataset or data.path.startswith(HF_SCHEME) or _is_saved_dataset(Path(data.path).expanduser()):
        return hf_source(data)
    return local_source(data)


def _digest(identity: Any) -> str:
    return hashlib.sha256(json.dumps(identity, sort_keys=True, default=str).encode()).hexdigest()


def read_bytes(source: Source, unit: Unit) -> bytes:
    if source.s3_url is not None:
        bucket, _ = parse_s3_url(source.s3_url)
        range_ = f"bytes={unit.start}-{unit.stop - 1}"
        return bytes(
            s3_client("data.path").get_object(Bucket=bucket, Key=unit.location, Range=range_)["Body"].read()
        )
    with open(unit.location, "rb") as handle:
        handle.seek(unit.start)
        return bytes(handle.read(unit.stop - unit.start))


def _text_pieces(text: str, ends_document: bool) -> list[tuple[str, bool]]:
    """Text cut after newlines into pieces of about PIECE_CHARS; only the last may end the document."""
    pieces, start = [], 0
    while start < len(text):
        cut = text.find("\n", start + PIECE_CHARS)
        stop = len(text) if cut < 0 else cut + 1
        pieces.append((text[start:stop], False))
        start = stop
    if pieces and ends_document:
        pieces[-1] = (pieces[-1][0], True)
    return pieces


def documents(source: Source, unit: Unit) -> list[tuple[str, bool]]:
    """The unit's text as (piece, ends a document) pairs; DataError for a JSONL line without the text field."""
    if unit.kind == "hf":
        assert source.hf is not None
        rows = load_hf(source.hf).select(range(unit.start, unit.stop))[source.text_field]
        return [(str(text), True) for text in rows if text]
    text = read_bytes(source, unit).decode("utf-8", errors="replace")
    if unit.kind == "text":
        return _text_pieces(text, unit.last)
    pieces = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            value = record[source.text_field]
        except (ValueError, KeyError, TypeError):
            where = f"{unit.location} (line {number} of bytes {unit.start}-{unit.stop})"
            raise DataError(
                f"data.path: {where}: not a JSON object with a string {source.text_field!r} field "
                "(data.text_field)"
            ) from None
        if not isinstance(value, str):
            raise DataError(f"data.path: {unit.location}: field {source.text_field!r} is not a string")
        if value:
            pieces.append((value, True))
    return pieces
