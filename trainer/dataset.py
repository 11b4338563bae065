"""Tokenizer, token cache and deterministic batch sampling.

Text (a file, a directory of *.txt files, a glob, or a Hugging Face dataset) is tokenized once with tiktoken
into a flat memory-mapped array of token ids, cached under data.cache_dir by a hash of the content and the
encoding. Documents are separated by the end-of-text token. The last data.val_fraction of the tokens is the
validation split. Every rank draws its own random windows from a generator seeded by (seed, rank, step,
micro-step), so a resumed run sees exactly the batches an uninterrupted one would have seen.
"""

from __future__ import annotations

import glob
import hashlib
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tiktoken

from trainer.config import ConfigError, DataSection
from trainer.shared_files import exclusive_lock, write_once

BYTES_ENCODING = "bytes"
END_OF_TEXT = "<|endoftext|>"
CACHE_FORMAT = 1  # bump when the cache layout changes, so old caches are not misread
TRAIN_STREAM, VAL_STREAM = 0, 1  # separate random streams for training and validation windows


class DataError(ConfigError):
    """Data that cannot be used (missing, too short, unknown encoding); the message says what and why.
    A kind of ConfigError: the config points at it, and the command line reports both the same way."""


def byte_encoding() -> tiktoken.Encoding:
    """A byte-level encoding built in code: 256 single-byte tokens + end-of-text. Needs no download."""
    return tiktoken.Encoding(
        name=BYTES_ENCODING,
        # Split nothing into words: every byte is its own rank, so no merges ever apply.
        pat_str=r"[\s\S]",
        mergeable_ranks={bytes([i]): i for i in range(256)},
        special_tokens={END_OF_TEXT: 256},
    )


def get_encoding(name: str) -> tiktoken.Encoding:
    if name == BYTES_ENCODING:
        return byte_encoding()
    known = tiktoken.list_encoding_names()
    if name not in known:
        raise DataError(
            f"data.encoding: unknown encoding {name!r}; allowed: {', '.join([BYTES_ENCODING, *known])}"
        )
    try:
        return tiktoken.get_encoding(name)
    except Exception as error:  # tiktoken downloads the vocabulary unless TIKTOKEN_CACHE_DIR holds it
        raise DataError(
            f"data.encoding: cannot load {name!r} ({type(error).__name__}); it needs a download or a "
            f"TIKTOKEN_CACHE_DIR that holds it (currently {os.environ.get('TIKTOKEN_CACHE_DIR', 'unset')}); "
            f"'{BYTES_ENCODING}' needs neither"
        ) from None


def find_text_files(path: str) -> list[Path]:
    """The files data.path names: one file, every *.txt under a directory, or a glob's matches."""
    target = Path(path).expanduser()
    if target.is_file():
        return [target]
    if target.is_dir():
        files = sorted(p for p in target.rglob("*.txt") if p.is_file())
        if not files:
            raise DataError(f"data.path: directory {path} holds no *.txt files")
        return files
    if glob.has_magic(path):
        files = sorted(
            Path(p) for p in glob.glob(os.path.expanduser(path), recursive=True) if Path(p).is_file()
        )
        if not files:
            raise DataError(f"data.path: glob {path!r} matches no files")
        return files
    raise DataError(f"data.path: no such file or directory: {path}")


@dataclass(frozen=True)
class TextSource:
    """Where the text comes from: an identity for the cache key and the documents themselves."""

    fingerprint: str
    describe: str
    documents: Callable[[], Iterable[str]]


def file_source(path: str) -> TextSource:
    files = find_text_files(path)
    digest = hashlib.sha256()
    for file in files:
        digest.update(hashlib.sha256(file.read_bytes()).digest())

    def documents() -> Iterable[str]:
        for file in files:
            yield file.read_text(encoding="utf-8", errors="replace")

    return TextSource(digest.hexdigest(), f"{len(files)} file(s) at {path}", documents)


def hf_source(data: DataSection) -> TextSource:
    """A Hugging Face dataset (for users online; HF_TOKEN from the environment for gated ones)."""
    try:
        import datasets  # imported lazily: an optional dependency
    except ImportError:
        raise DataError("data.hf_dataset needs the 'datasets' package: pip install datasets") from None
    name = data.hf_dataset
    try:
        dataset = datasets.load_dataset(
            name, data.hf_config, split=data.hf_split, token=os.environ.get("HF_TOKEN")
        )
    except Exception as error:
        raise DataError(f"data.hf_dataset: cannot load {name!r} split {data.hf_split!r}: {error}") from None
    if data.hf_text_field not in dataset.column_names:
        raise DataError(
            f"data.hf_text_field: {data.hf_text_field!r} is not a column of {name!r}; "
            f"columns: {', '.join(dataset.column_names)}"
        )

    def documents() -> Iterable[str]:
        yield from dataset[data.hf_text_field]

    identity = f"{name}/{data.hf_config}/{data.hf_split}/{data.hf_text_field}/{dataset._fingerprint}"
    return TextSource(
        hashlib.sha256(identity.encode()).hexdigest(), f"Hugging Face dataset {name}", documents
    )


def token_dtype(encoding: tiktoken.Encoding) -> type[np.unsignedinteger]:
    """The smallest unsigned type that holds every token id of the encoding."""
    return np.uint16 if encoding.n_vocab <= 2**16 else np.uint32


def tokenize(source: TextSource, encoding: tiktoken.Encoding) -> np.ndarray:
    """All documents as one token array, each followed by end-of-text."""
    dtype = token_dtype(encoding)
    eot = encoding.eot_token
    chunks = [
        np.asarray([*tokens, eot], dtype=dtype)
        for tokens in encoding.encode_ordinary_batch(list(source.documents()))
    ]
    return np.concatenate(chunks) if chunks else np.empty(0, dtype=dtype)


@dataclass(frozen=True)
class TokenData:
    train: np.ndarray
    val: np.ndarray
    vocab_size: int
    describe: str


def _split(
    tokens: np.ndarray, val_fraction: float, block_size: int, describe: str
) -> tuple[np.ndarray, np.ndarray]:
    needed = block_size + 1  # one window of inputs plus the shifted target
    n_val = int(len(tokens) * val_fraction)
    train, val = tokens[: len(tokens) - n_val], tokens[len(tokens) - n_val :]
    if len(train) < needed or len(val) < needed:
        raise DataError(
            f"data: {describe} gives {len(tokens)} tokens, too short for model.block_size={block_size}: "
            f"both the training split ({len(train)}) and the validation split ({len(val)}, "
            f"data.val_fraction={val_fraction}) need at least {needed} tokens"
        )
    return train, val


class TokenCache:
    """Prepares the token array for a data config; `prepare` builds it (on one process per node), `open`
    memory-maps it (on every process, after the builders are done).

    data.cache_dir may be a volume that every node shares, and every node's builder may start at once.
    The builders take turns under a lock file beside the cache file, so that the first builds it and the
    others find it built; the file itself is published with `write_once` (a unique temporary name, then
    link-if-absent), so the cache is whole and never replaced under a reader even where the volume cannot
    lock (NFS mounted with nolock: then each node builds its own copy and the first to publish wins)."""

    def __init__(self, data: DataSection, block_size: int) -> None:
        self.data = data
        self.block_size = block_size
        self.encoding = get_encoding(data.encoding)
        self.source = hf_source(data) if data.hf_dataset else file_source(data.path)
        key = hashlib.sha256(f"{CACHE_FORMAT}/{data.encoding}/{self.source.fingerprint}".encode()).hexdigest()
        self.dtype = token_dtype(self.encoding)
        self.path = Path(data.cache_dir).expanduser() / f"tokens-{key[:32]}.{np.dtype(self.dtype).name}.bin"
        self.lock_path = self.path.with_name(f"{self.path.name}.lock")

    def prepare(self) -> None:
        """Build the cache file unless it exists (or another builder finishes it while this one waits)."""
        if self.path.exists():
            return
        tokens = tokenize(self.source, self.encoding)
        _split(tokens, self.data.val_fraction, self.block_size, self.source.describe)  # fail before writing
        with exclusive_lock(self.lock_path):
            if not self.path.exists():  # built by another node while this one waited
                write_once(self.path, tokens.data.cast("B"))

    def open(self) -> TokenData:
        tokens = np.memmap(self.path, dtype=self.dtype, mode="r")
        train, val = _split(tokens, self.data.val_fraction, self.block_size, self.source.describe)
        return TokenData(train, val, self.encoding.n_vocab, self.source.describe)


def sample_windows(
    tokens: np.ndarray, batch_size: int, block_size: int, seed_words: Iterable[int]
) -> tuple[np.ndarray, np.ndarray]:
    """batch_size random windows (inputs, next-token targets), each (batch_size, block_size) int64, drawn
    from a generator seeded by seed_words alone."""
    rng = np.random.default_rng(list(seed_words))
    starts = rng.integers(0, len(tokens) - block_size, size=batch_size)
    windows = np.stack([np.asarray(tokens[s : s + block_size + 1], dtype=np.int64) for s in starts])
    return np.ascontiguousarray(windows[:, :-1]), np.ascontiguousarray(windows[:, 1:])


def train_batch(
    data: TokenData, batch_size: int, block_size: int, seed: int, rank: int, step: int, micro_step: int
) -> tuple[np.ndarray, np.ndarray]:
    return sample_windows(data.train, batch_size, block_size, (seed, TRAIN_STREAM, rank, step, micro_step))


def val_batch(
    data: TokenData, batch_size: int, block_size: int, seed: int, rank: int, index: int
) -> tuple[np.ndarray, np.ndarray]:
    """The index-th validation batch of this rank: the same windows at every evaluation."""
    return sample_windows(data.val, batch_size, block_size, (seed, VAL_STREAM, rank, index))
