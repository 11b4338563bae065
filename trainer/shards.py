"""Token shards (nanoGPT's raw uint16/uint32, llm.c's .bin with its header) and their manifest.json, read
through at most OPEN_MAPS memory maps at a time: memory stays bounded however large the corpus."""

from __future__ import annotations

import json
import mmap
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from trainer.config import ConfigError

MANIFEST = "manifest.json"
MANIFEST_FORMAT = 1
LLMC_MAGIC = 20240520  # upstream: karpathy/llm.c dev/data/data_common.py write_datafile (version 1: uint16)
LLMC_VERSION = 1
LLMC_HEADER_BYTES = 256 * 4
OPEN_MAPS = 8  # shards memory-mapped at once by one reader


class DataError(ConfigError):
    """Data that cannot be used; a ConfigError, as the config points at it."""


@dataclass(frozen=True)
class Shard:
    """A file of tokens from offset (header bytes); split "train", "val" or "" (data.val_fraction decides)."""

    path: str
    offset: int
    tokens: int
    dtype: str
    split: str = ""
    sha256: str = ""

    def to_dict(self, directory: Path) -> dict[str, Any]:
        inside = Path(self.path).parent == directory
        return {
            "file": Path(self.path).name if inside else self.path,
            "offset": self.offset,
            "tokens": self.tokens,
            "split": self.split,
            "sha256": self.sha256,
        }


def inspect_bin(path: Path, split: str = "") -> Shard:
    """An already-tokenized .bin: llm.c's (header checked) or nanoGPT's raw uint16; else DataError."""
    try:
        size = path.stat().st_size
        with path.open("rb") as handle:
            head = handle.read(LLMC_HEADER_BYTES)
    except OSError as error:
        raise DataError(f"data.path: cannot read token file {path}: {error.strerror}") from None
    return shard_of_bytes(str(path), head, size, split)


def shard_of_bytes(name: str, head: bytes, size: int, split: str = "") -> Shard:
    """The Shard of a token file of `size` bytes starting with `head`."""
    if len(head) >= 4 and int(np.frombuffer(head[:4], dtype="<i4")[0]) == LLMC_MAGIC:
        if len(head) < LLMC_HEADER_BYTES:
            raise DataError(f"data.path: {name}: llm.c header cut short ({size} bytes, header is 1024)")
        header = np.frombuffer(head, dtype="<i4")
        if int(header[1]) != LLMC_VERSION:
            raise DataError(
                f"data.path: {name}: wrong header: llm.c version {int(header[1])}, only version 1 "
                "(uint16 tokens) is read"
            )
        tokens = int(header[2])
        if size != LLMC_HEADER_BYTES + 2 * tokens:
            raise DataError(
                f"data.path: {name}: wrong header: it announces {tokens} tokens "
                f"({LLMC_HEADER_BYTES + 2 * tokens} bytes) but the file has {size} bytes"
            )
        return Shard(name, LLMC_HEADER_BYTES, tokens, "uint16", split)
    if size == 0 or size % 2:
        raise DataError(
            f"data.path: {name}: not a token file: {size} bytes, neither an llm.c header (magic "
            f"{LLMC_MAGIC}) nor whole uint16 tokens"
        )
    return Shard(name, 0, size // 2, "uint16", split)


@dataclass(frozen=True)
class Manifest:
    directory: Path
    source: str
    encoding: str
    vocab_size: int
    shards: tuple[Shard, ...]

    @property
    def tokens(self) -> int:
        return sum(shard.tokens for shard in self.shards)


def write_manifest_bytes(
    directory: Path, source: str, fingerprint: str, encoding: str, vocab_size: int, shards: list[Shard]
) -> bytes:
    """The manifest's text; the same bytes for the same shards, whoever writes it."""
    document = {
        "format": MANIFEST_FORMAT,
        "source": source,
        "fingerprint": fingerprint,
        "encoding": encoding,
        "vocab_size": vocab_size,
        "dtype": shards[0].dtype if shards else "uint16",
        "tokens": sum(s.tokens for s in shards),
        "shards": [s.to_dict(directory) for s in shards],
    }
    return (json.dumps(document, indent=1) + "\n").encode()


def read_manifest(directory: Path) -> Manifest:
    """A prepared directory's manifest, each shard's size and header checked; else DataError."""
    path = directory / MANIFEST
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
        dtype = str(document["dtype"])
        # an absolute "file" stays as it is (Path's "/" keeps the right side when absolute)
        shards = [
            Shard(
                str(directory / entry["file"]),
                int(entry["offset"]),
                int(entry["tokens"]),
                dtype,
                entry["split"],
                entry["sha256"],
            )
            for entry in document["shards"]
        ]
        manifest = Manifest(
            directory, document["source"], document["encoding"], int(document["vocab_size"]), tuple(shards)
        )
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise DataError(f"data: unreadable manifest {path}: {error}") from None
    for shard in manifest.shards:
        check_shard(shard)
    return manifest


def check_shard(shard: Shard) -> None:
    """The shard's file there with its manifest's size (and llm.c header where it had one); else DataError."""
    path = Path(shard.path)
    expected = shard.offset + shard.tokens * np.dtype(shard.dtype).itemsize
    try:
        size = path.stat().st_size
        with path.open("rb") as handle:
            head = handle.read(shard.offset)
    except OSError as error:
        raise DataError(f"data: unreadable shard {path}: {error.strerror}") from None
    if size != expected:
        raise DataError(f"data: unreadable shard {path}: {size} bytes, its manifest says {expected}")
    if shard.offset and shard_of_bytes(str(path), head, size).tokens != shard.tokens:
        raise DataError(f"data: shard {path}: wrong header: its token count differs from the manifest's")


class TokenView:
    """Tokens from pieces of shards, sliced through at most OPEN_MAPS memory maps, pages released once copied."""

    def __init__(self, pieces: list[tuple[Shard, int, int]]) -> None:
        self.pieces = [(shard, start, stop) for shard, start, stop in pieces if stop > start]
        lengths = [stop - start for _, start, stop in self.pieces]
        self.starts = np.concatenate([[0], np.cumsum(lengths, dtype=np.int64)])
        self.maps: OrderedDict[str, tuple[mmap.mmap, np.ndarray]] = OrderedDict()
        self.dtype = np.dtype(self.pieces[0][0].dtype) if self.pieces else np.dtype(np.uint16)

    def __len__(self) -> int:
        return int(self.starts[-1])

    def _map(self, shard: Shard) -> tuple[mmap.mmap, np.ndarray]:
        mapped = self.maps.pop(shard.path, None)
        if mapped is None:
            with open(shard.path, "rb") as handle:
                region = mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ)
            region.madvise(mmap.MADV_RANDOM)
            tokens = np.frombuffer(region, dtype=shard.dtype, count=shard.tokens, offset=shard.offset)
            mapped = (region, tokens)
            while len(self.maps) >= OPEN_MAPS:
                self.maps.popitem(last=False)  # dropping the last reference unmaps it
        self.maps[shard.path] = mapped
        return mapped

    def __getitem__(self, index: slice) -> np.ndarray:
        if not isinstance(index, slice) or index.step not in (None, 1):
            raise TypeError("TokenView supports contiguous slices only")
        start, stop, _ = index.indices(len(self))
        parts = []
        piece = int(np.searchsorted(self.starts, start, side="right")) - 1
        while start < stop:
            shard, first, last = self.pieces[piece]
            offset = start - int(self.starts[piece])
            take = min(stop - start, last - first - offset)
            region, tokens = self._map(shard)
            parts.append(tokens[first + offset : first + offset + take].copy())
            byte_start = shard.offset + (first + offset) * tokens.itemsize
            aligned = byte_start - byte_start % mmap.PAGESIZE
            region.madvise(mmap.MADV_DONTNEED, aligned, byte_start + take * tokens.itemsize - aligned)
            start += take
            piece += 1
        if not parts:
            return np.empty(0, dtype=self.dtype)
        return parts[0] if len(parts) == 1 else np.concatenate(parts)


def split_views(manifest: Manifest, val_fraction: float) -> tuple[TokenView, TokenView]:
    """(train, val): val is the shards marked val if any, else the last val_fraction of all tokens."""
    marked = [s for s in manifest.shards if s.split == "val"]
    if marked:
        rest = [s for s in manifest.shards if s.split != "val"]
        return TokenView([(s, 0, s.tokens) for s in rest]), TokenView([(s, 0, s.tokens) for s in marked])
    total = manifest.tokens
    boundary = total - int(total * val_fraction)
    train: list[tuple[Shard, int, int]] = []
    val: list[tuple[Shard, int, int]] = []
    position = 0
    for shard in manifest.shards:
        cut = min(max(boundary - position, 0), shard.tokens)
        train.append((shard, 0, cut))
        val.append((shard, cut, shard.tokens))
        position += shard.tokens
    return TokenView(train), TokenView(val)


def split_of_name(name: str) -> str:
    """nanoGPT's val.bin and llm.c's <name>_val_<n>.bin hold the validation split."""
    stem = Path(name).stem
    return "val" if stem == "val" or "_val_" in f"_{stem}_" else ""
