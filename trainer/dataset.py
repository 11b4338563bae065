"""The prepared shards and batch sampling: every rank draws windows from a generator seeded by
(seed, rank, step, micro-step), so a resumed run sees exactly the batches an uninterrupted one would."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np

from trainer.config import DataSection
from trainer.prepare import get_encoding, prepare, prepared_directory, wait_for_manifest
from trainer.shards import DataError, Manifest, TokenView, read_manifest, split_views
from trainer.sources import resolve_source

__all__ = ["DataError", "TokenCache", "TokenData", "train_batch", "val_batch"]

TRAIN_STREAM, VAL_STREAM = 0, 1  # separate random streams for training and validation windows


@dataclass(frozen=True)
class TokenData:
    train: TokenView
    val: TokenView
    vocab_size: int
    describe: str


class TokenCache:
    """A data config's prepared shards; constructing it lists the source (a missing one fails here, every rank)."""

    def __init__(self, data: DataSection, block_size: int) -> None:
        self.data, self.block_size = data, block_size
        self.encoding = get_encoding(data.encoding)
        self.source = resolve_source(data)
        self.directory = prepared_directory(data, self.source)

    def prepare(self, workers: int = 0) -> Manifest:
        manifest, _ = prepare(self.data, workers, self.source)
        return manifest

    def ready(self, local_rank: int) -> None:
        """Before any collective: local rank 0 prepares, the node's others wait for the manifest file."""
        if local_rank == 0:
            self.prepare()
        else:
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
