"""The tokenizer, and a source tokenized once, before any rank trains, into shards and a manifest (written
last) under data.cache_dir/tokens-<hash of what decides them>. Resumable (shards published whole) and safe on a shared
directory (a lock per shard; without locks the first to publish the same bytes wins)."""

from __future__ import annotations

import concurrent.futures
import dataclasses
import functools
import hashlib
import multiprocessing
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import tiktoken

from trainer.config import BYTES_ENCODING, DataSection
from trainer.shards import (
    MANIFEST,
    MANIFEST_FORMAT,
    DataError,
    Manifest,
    Shard,
    inspect_bin,
    read_manifest,
    shard_of_bytes,
    split_of_name,
    write_manifest_bytes,
)
from trainer.shared_files import HeldLock, sha256_of, write_once
from trainer.sources import Source, Unit, documents, read_bytes, resolve_source

BUSY_POLL_SECONDS = 0.5
CHECK_CHUNK_TOKENS = 1 << 22  # token ids hashed and checked at a time
END_OF_TEXT = "<|endoftext|>"


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


def prepared_directory(data: DataSection, source: Source) -> Path:
    identity = f"{MANIFEST_FORMAT}/{data.encoding}/{data.text_field}/{data.shard_bytes}/{source.fingerprint}"
    key = hashlib.sha256(identity.encode()).hexdigest()[:32]
    return Path(data.cache_dir).expanduser() / f"tokens-{key}"


def shard_path(directory: Path, index: int) -> Path:
    return directory / f"shard_{index:06d}.bin"


def encode_ids(encoding: tiktoken.Encoding, text: str) -> np.ndarray:
    """encode_ordinary as a uint32 array, no Python int per token (docs/benchmarks.md); surrogates replaced."""
    try:
        return encoding.encode_to_numpy(text, disallowed_special=())
    except UnicodeEncodeError:
        text = text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
        return encoding.encode_to_numpy(text, disallowed_special=())


def tokenize_unit(source: Source, unit: Unit, encoding_name: str) -> np.ndarray:
    """The unit's token ids, each document followed by end-of-text."""
    encoding = get_encoding(encoding_name)
    end_of_text = np.array([encoding.eot_token], dtype=np.uint32)
    parts = []
    for text, ends in documents(source, unit):
        parts.append(encode_ids(encoding, text))
        if ends:
            parts.append(end_of_text)
    if not parts:
        return np.zeros(0, dtype=token_dtype(encoding))
    # ids < n_vocab: the unsafe cast loses nothing
    return np.concatenate(parts, dtype=token_dtype(encoding), casting="unsafe")


def _check_ids(ids: np.ndarray, vocab_size: int, where: str) -> None:
    largest = int(ids.max())
    if largest >= vocab_size:
        raise DataError(
            f"data.path: {where} holds id {largest}, outside the {vocab_size}-token vocabulary of data.encoding"
        )


def _scan_token_file(shard: Shard, vocab_size: int, describe: str) -> str:
    """A token file's sha256, its ids checked against the vocabulary, in one pass of bounded memory."""
    digest = hashlib.sha256()
    dtype = np.dtype(shard.dtype)
    with open(shard.path, "rb") as handle:
        digest.update(handle.read(shard.offset))
        while chunk := handle.read(CHECK_CHUNK_TOKENS * dtype.itemsize):
            digest.update(chunk)
            _check_ids(np.frombuffer(chunk, dtype=dtype), vocab_size, f"{describe}: token file {shard.path}")
    return digest.hexdigest()


def _token_file(source: Source, unit: Unit, target: Path, vocab_size: int) -> tuple[Shard, bool]:
    """A *.bin unit: named in place (a local file) or copied in whole (from a bucket)."""
    split = split_of_name(unit.location)
    if source.s3_url is None:
        shard = inspect_bin(Path(unit.location), split)
        return dataclasses.replace(shard, sha256=_scan_token_file(shard, vocab_size, source.describe)), False
    if target.exists():
        return dataclasses.replace(inspect_bin(target, split), sha256=sha256_of(target)), False
    content = read_bytes(source, unit)
    shard = shard_of_bytes(f"{source.s3_url} {unit.location}", content[:1024], len(content), split)
    _check_ids(np.frombuffer(content, dtype=shard.dtype, offset=shard.offset), vocab_size, unit.location)
    write_once(target, content)
    return dataclasses.replace(shard, path=str(target), sha256=hashlib.sha256(content).hexdigest()), True


def prepare_unit(
    directory: Path, source: Source, index: int, unit: Unit, encoding_name: str
) -> tuple[Shard | None, bool]:
    """Publish shard `index` unless it exists: (its Shard, tokenized here); (None, False) while another holds it."""
    target = shard_path(directory, index)
    encoding = get_encoding(encoding_name)
    dtype = np.dtype(token_dtype(encoding)).name
    lock = HeldLock(directory / ".locks" / f"{target.name}.lock")
    if not target.exists() and unit.kind != "bin" and lock.acquire() == "busy":
        return None, False
    try:
        if unit.kind == "bin":
            return _token_file(source, unit, target, encoding.n_vocab)
        if target.exists():
            count = target.stat().st_size // np.dtype(dtype).itemsize
            return Shard(str(target), 0, count, dtype, "", sha256_of(target)), False
        tokens = tokenize_unit(source, unit, encoding_name)
        content = tokens.data.cast("B")
        write_once(target, content)
        return Shard(str(target), 0, len(tokens), dtype, "", hashlib.sha256(content).hexdigest()), True
    finally:
        lock.release()


def environment_workers() -> int:
    """The CPUs this process may use (its affinity, not the machine's count)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def _run_pool(
    directory: Path, source: Source, encoding: str, indices: list[int], workers: int
) -> dict[int, Any]:
    units = source.units
    if workers <= 1 or len(indices) <= 1:
        return {i: prepare_unit(directory, source, i, units[i], encoding) for i in indices}
    source = dataclasses.replace(source, units=())  # each task carries its own unit only
    # fork: no caller's threads are needed (torch's start later); spawn would re-run the caller's __main__
    context = multiprocessing.get_context("fork")
    with concurrent.futures.ProcessPoolExecutor(min(workers, len(indices)), mp_context=context) as pool:
        # map cancels the tasks not yet started once one fails (or the wait is interrupted)
        task = functools.partial(prepare_unit, directory, source, encoding_name=encoding)
        return dict(zip(indices, pool.map(task, indices, [units[i] for i in indices]), strict=True))


def prepare(data: DataSection, workers: int = 0, source: Source | None = None) -> tuple[Manifest, int]:
    """(manifest, shards tokenized here); DataError (one line, nothing half-written) for unusable data."""
    source = source or resolve_source(data)
    encoding = get_encoding(data.encoding)
    directory = prepared_directory(data, source)
    if (directory / MANIFEST).exists():
        return read_manifest(directory), 0
    workers = workers or data.workers or environment_workers()
    pending = list(range(len(source.units)))
    shards: dict[int, Shard] = {}
    tokenized = 0
    while pending:
        results = _run_pool(directory, source, data.encoding, pending, workers)
        busy = []
        for index, (shard, fresh) in sorted(results.items()):
            if shard is None:
                busy.append(index)
            else:
                shards[index] = shard
                tokenized += fresh
        if busy:  # wait for their holder to publish (or die, freeing the lock)
            time.sleep(BUSY_POLL_SECONDS)
        pending = busy
    ordered = [shards[i] for i in range(len(source.units))]
    if sum(s.tokens for s in ordered) == 0:
        raise DataError(f"data.path: {source.describe} holds no text")
    manifest_bytes = write_manifest_bytes(
        directory, source.describe, source.fingerprint, data.encoding, encoding.n_vocab, ordered
    )
    write_once(directory / MANIFEST, manifest_bytes)
    return read_manifest(directory), tokenized


def wait_for_manifest(directory: Path, poll_seconds: float = 1.0) -> None:
    """Wait on the file (no collective) for another process of this node to publish the manifest."""
    while not (directory / MANIFEST).exists():
        time.sleep(poll_seconds)


def run_prepare(data: DataSection, workers: int = 0) -> Manifest:
    """Prepare and say so in one line on stderr."""
    start = time.perf_counter()
    manifest, tokenized = prepare(data, workers)
    print(
        f"prepared {manifest.directory}: {manifest.tokens} tokens in {len(manifest.shards)} shard(s) from "
        f"{manifest.source} ({tokenized} tokenized now, {len(manifest.shards) - tokenized} found prepared)"
        f" in {time.perf_counter() - start:.1f} s",
        file=sys.stderr,
        flush=True,
    )
    return manifest
