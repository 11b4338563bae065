"""The tokenizer, the prepared shards and batch sampling: every rank draws windows from a generator seeded by
(seed, rank, step, micro-step), so a resumed run sees exactly the batches an uninterrupted one would."""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
import tiktoken

from trainer.config import BYTES_ENCODING, DataSection
from trainer.shards import MANIFEST, DataError, Manifest, TokenView, read_manifest, split_views

__all__ = ["DataError", "TokenCache", "TokenData", "get_encoding", "train_batch", "val_batch"]

END_OF_TEXT = "<|endoftext|>"
TRAIN_STREAM, VAL_STREAM = 0, 1  # separate random streams for training and validation windows


def byte_encoding() -> tiktoken.Encoding:
    """256 single-byte tokens + end-of-text, no download; every byte its own rank, so no merge applies."""
    return tiktoken.Encoding(
        name=BYTES_ENCODING,
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


def token_dtype(encoding: tiktoken.Encoding) -> type[np.unsignedinteger]:
    return np.uint16 if encoding.n_vocab <= 2**16 else np.uint32


@dataclass(frozen=True)
class TokenData:
    train: TokenView
    val: TokenView
    vocab_size: int
    describe: str


class TokenCache:
    """A data config's prepared shards; constructing it lists the source (a missing one fails here, every rank)."""

    def __init__(self, data: DataSection, block_size: int) -> None:
        from trainer.prepare import prepared_directory
        from trainer.sources import resolve_source

        self.data, self.block_size = data, block_size
        self.encoding = get_encoding(data.encoding)
        self.source = resolve_source(data)
        self.directory = prepared_directory(data, self.source)
        self.path = self.directory / MANIFEST

    def prepare(self, workers: int = 0) -> Manifest:
        from trainer.prepare import prepare

        manifest, _ = prepare(self.data, workers, self.source)
        return manifest

    def ready(self, local_rank: int) -> None:
        """Before any collective: local rank 0 prepares, the node's others wait for the manifest file."""
        if local_rank == 0:
            self.prepare()
        else:
            from trainer.prepare import wait_for_manifest

            wait_for_manifest(self.directory)

    def open(self) -> TokenData:
        manifest = read_manifest(self.directory)
        if manifest.encoding != self.data.encoding:
            raise DataError(
                f"data: {self.directory} holds {manifest.encoding} tokens, data.encoding is {self.data.encoding}"
            )
        train, val = split_views(manifest, self.data.val_fraction)
        needed = self.block_size + 1  # one window of inputs plus the shifted target
        if len(train) < needed or len(val) < needed:
            raise DataError(
                f"data: {self.source.describe} gives {manifest.tokens} tokens, too short for "
                f"model.block_size={self.block_size}: both the training split ({len(train)}) and the "
                f"validation split ({len(val)}, data.val_fraction={self.data.val_fraction} or the *val* "
                f"token files) need at least {needed} tokens"
            )
        return TokenData(train, val, self.encoding.n_vocab, self.source.describe)


def sample_windows(
    tokens: Any, batch_size: int, block_size: int, seed_words: Iterable[int]
) -> tuple[np.ndarray, np.ndarray]:
    """(inputs, next-token targets), each (batch_size, block_size) int64, from a generator seeded by seed_words."""
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
