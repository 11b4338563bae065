"""trainer.prepare, trainer.sources, trainer.shards: every source and format, resumable and racing
preparation, reading shards without loading them, and bad data as one line."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tiktoken

from tests.support.s3_server import S3Server
from trainer import prepare as prepare_module
from trainer.config import load_config
from trainer.dataset import DataError, TokenCache, train_batch, val_batch
from trainer.prepare import byte_encoding, prepare, prepared_directory, shard_path
from trainer.shards import LLMC_HEADER_BYTES, LLMC_MAGIC, MANIFEST, OPEN_MAPS, Shard, TokenView, read_manifest
from trainer.sources import resolve_source

from .conftest import REPO, TINY_CONFIG, trainer_env

SAMPLE = REPO / "trainer" / "data"
EOT = 256  # the bytes encoding's end-of-text


def section(tmp_path: Path, path: Any, **settings: Any) -> Any:
    overrides = [f"data.cache_dir={tmp_path / 'cache'}", f"data.path={path}"]
    overrides += [f"data.{key}={value}" for key, value in settings.items()]
    return load_config(TINY_CONFIG, overrides).data


def all_tokens(cache: TokenCache) -> list[int]:
    data = cache.open()
    return [*data.train[:].tolist(), *data.val[:].tolist()]


def files_of(directory: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(directory.iterdir()) if p.is_file()}


def llmc_file(path: Path, tokens: list[int], version: int = 1, announced: int | None = None) -> None:
    header = np.zeros(256, dtype="<i4")
    header[:3] = [LLMC_MAGIC, version, len(tokens) if announced is None else announced]
    path.write_bytes(header.tobytes() + np.asarray(tokens, dtype="<u2").tobytes())


def test_jsonl_documents_are_the_text_field_each_followed_by_end_of_text(tmp_path: Path) -> None:
    corpus = tmp_path / "docs.jsonl"
    lines = [{"text": "to be", "id": 1}, {"text": ""}, {"text": "or not"}]
    corpus.write_text("\n".join(json.dumps(line) for line in lines) + "\n\n")
    cache = TokenCache(section(tmp_path, corpus, val_fraction=0.5), block_size=2)
    cache.prepare()
    assert all_tokens(cache) == [*b"to be", EOT, *b"or not", EOT]  # the empty document is skipped

    (tmp_path / "body.jsonl").write_text(json.dumps({"body": "to be or not to be"}) + "\n")
    cache = TokenCache(section(tmp_path, tmp_path / "body.jsonl", text_field="body", val_fraction=0.5), 2)
    cache.prepare()
    assert all_tokens(cache) == [*b"to be or not to be", EOT]


def wide_encoding() -> tiktoken.Encoding:
    """A BPE encoding of 65,792 tokens (the 256 bytes, then every byte pair, the pairs starting with 'z'
    last): token ids past 65,535 (uint32 shards) and merges, where the bytes encoding has neither."""
    pairs = [bytes([a, b]) for a in range(256) for b in range(256)]
    pairs.sort(key=lambda pair: pair[0] == ord("z"))
    ranks = {bytes([i]): i for i in range(256)} | {pair: 256 + i for i, pair in enumerate(pairs)}
    return tiktoken.Encoding(
        "wide", pat_str=r"\S+|\s+", mergeable_ranks=ranks, special_tokens={"<|endoftext|>": len(ranks)}
    )


@pytest.mark.parametrize("encoding", [byte_encoding(), wide_encoding()], ids=["bytes", "wide"])
def test_shards_hold_exactly_what_encode_ordinary_gives_each_document(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, encoding: tiktoken.Encoding
) -> None:
    """Preparation takes tiktoken's ids as an array (encode_to_numpy, no Python int per token): the shards are
    still encode_ordinary's ids, with special tokens' text as ordinary text and lone surrogates (a JSON
    escape) replaced as encode_ordinary replaces them."""
    monkeypatch.setattr(prepare_module, "get_encoding", lambda name: encoding)
    documents = [
        "zz top <|endoftext|> ends\n",
        "caf\u00e9 \ud800 \U0001f600",
        "x" * 70_000 + "\n" + "zzz " * 9,
    ]
    corpus = tmp_path / "docs.jsonl"
    corpus.write_text("".join(json.dumps({"text": d}) + "\n" for d in documents))
    manifest, _ = prepare(section(tmp_path, corpus), 1)
    (shard,) = manifest.shards
    expected = [t for d in documents for t in [*encoding.encode_ordinary(d), encoding.eot_token]]
    dtype = np.uint16 if encoding.n_vocab <= 2**16 else np.uint32
    assert shard.dtype == np.dtype(dtype).name
    assert np.fromfile(shard.path, dtype=dtype).tolist() == expected
    assert encoding.name == "bytes" or max(expected) > 65535  # the wide one reaches past uint16


def test_large_files_are_cut_after_newlines_into_shards_read_as_one_sequence(tmp_path: Path) -> None:
    """A 20 kB text file in 1 kB shards: every shard but the last ends with a newline, the concatenation is
    the file and its end-of-text, windows cross shard boundaries, and the split follows val_fraction."""
    text = "".join(f"line {i} of the play\n" for i in range(1000))
    (tmp_path / "play.txt").write_text(text)
    cache = TokenCache(section(tmp_path, tmp_path / "play.txt", shard_bytes=1000), block_size=64)
    manifest = cache.prepare()
    assert len(manifest.shards) > 15
    for shard in manifest.shards[:-1]:
        assert np.fromfile(shard.path, dtype=np.uint16)[-1] == ord("\n")
    tokens = all_tokens(cache)
    assert tokens == [*text.encode(), EOT]
    data = cache.open()
    assert len(data.val) == int(len(tokens) * 0.1)
    starts = np.asarray(data.train.starts)
    crossing = int(starts[3]) - 10
    assert np.asarray(data.train[crossing : crossing + 20]).tolist() == tokens[crossing : crossing + 20]
    inputs, targets = train_batch(data, 8, 64, seed=3, rank=0, step=0, micro_step=0)
    assert np.array_equal(inputs[:, 1:], targets[:, :-1])


def test_views_keep_a_bounded_number_of_shards_mapped(tmp_path: Path) -> None:
    shards = []
    for index in range(OPEN_MAPS * 2):
        path = tmp_path / f"s{index}.bin"
        np.full(100, index, dtype=np.uint16).tofile(path)
        shards.append(Shard(str(path), 0, 100, "uint16"))
    view = TokenView([(shard, 0, 100) for shard in shards])
    assert len(view) == 100 * OPEN_MAPS * 2
    for index in range(OPEN_MAPS * 2):
        assert set(view[index * 100 : index * 100 + 100].tolist()) == {index}
        assert len(view.maps) <= OPEN_MAPS
    assert view[50:250].tolist() == [0] * 50 + [1] * 100 + [2] * 50


def test_nanogpt_bins_are_read_in_place_with_val_bin_as_the_validation_split(tmp_path: Path) -> None:
    corpus = tmp_path / "shakespeare"
    corpus.mkdir()
    train, val = np.arange(1000, dtype=np.uint16) % 250, np.full(200, 251, dtype=np.uint16)
    train.tofile(corpus / "train.bin")
    val.tofile(corpus / "val.bin")
    cache = TokenCache(section(tmp_path, corpus), block_size=32)
    manifest = cache.prepare()
    assert [Path(s.path) for s in manifest.shards] == [corpus / "train.bin", corpus / "val.bin"]
    assert sorted(p.name for p in cache.directory.iterdir() if p.is_file()) == ["manifest.json"]  # no copy
    data = cache.open()
    assert (len(data.train), len(data.val)) == (1000, 200)
    for step in range(5):
        assert 251 not in train_batch(data, 4, 32, seed=1, rank=0, step=step, micro_step=0)[0]
        assert set(val_batch(data, 4, 32, seed=1, rank=0, index=step)[0].ravel()) == {251}


def test_llmc_bins_are_read_past_their_header(tmp_path: Path) -> None:
    corpus = tmp_path / "fineweb"
    corpus.mkdir()
    llmc_file(corpus / "fineweb_train_000001.bin", list(range(1, 101)))
    llmc_file(corpus / "fineweb_train_000002.bin", list(range(101, 201)))
    llmc_file(corpus / "fineweb_val_000000.bin", [255] * 50)
    cache = TokenCache(section(tmp_path, corpus), block_size=16)
    manifest = cache.prepare()
    assert [s.offset for s in manifest.shards] == [LLMC_HEADER_BYTES] * 3
    data = cache.open()
    assert data.train[:].tolist() == list(range(1, 201))
    assert data.val[:].tolist() == [255] * 50


@pytest.mark.parametrize(
    ("write", "message"),
    [
        (lambda p: llmc_file(p, [1, 2, 3], version=2), "wrong header: llm.c version 2"),
        (lambda p: llmc_file(p, [1, 2, 3], announced=5), "wrong header: it announces 5 tokens (1034 bytes)"),
        (lambda p: p.write_bytes(b"\x01\x00\x02"), "not a token file: 3 bytes"),
        (lambda p: np.asarray([1, 300], dtype=np.uint16).tofile(p), "holds id 300, outside the 257-token"),
    ],
)
def test_a_bad_token_file_is_one_line_and_nothing_is_published(
    tmp_path: Path, write: Any, message: str
) -> None:
    write(tmp_path / "train.bin")
    cache = TokenCache(section(tmp_path, tmp_path / "train.bin"), block_size=2)
    with pytest.raises(DataError) as error:
        cache.prepare()
    assert message in str(error.value) and "\n" not in str(error.value)
    assert not (cache.directory / MANIFEST).exists()


def test_text_and_token_files_do_not_mix(tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_text("text")
    np.arange(10, dtype=np.uint16).tofile(tmp_path / "b.bin")
    with pytest.raises(DataError, match=r"mixes token files \(\*\.bin\) with text"):
        TokenCache(section(tmp_path, tmp_path), block_size=2)


def test_a_dataset_saved_to_disk_is_read_offline(tmp_path: Path) -> None:
    datasets = pytest.importorskip("datasets")
    rows = {"text": ["to be", "", "or not"], "label": [0, 1, 2]}
    datasets.Dataset.from_dict(rows).save_to_disk(str(tmp_path / "plays"))
    cache = TokenCache(section(tmp_path, tmp_path / "plays", val_fraction=0.5), block_size=2)
    cache.prepare()
    assert all_tokens(cache) == [*b"to be", EOT, *b"or not", EOT]
    assert cache.source.describe == f"Hugging Face dataset {tmp_path / 'plays'}"

    splits = datasets.DatasetDict(
        {
            "train": datasets.Dataset.from_dict({"body": ["to be or not"]}),
            "test": datasets.Dataset.from_dict({"body": ["x"]}),
        }
    )
    splits.save_to_disk(str(tmp_path / "dict"))
    cache = TokenCache(section(tmp_path, tmp_path / "dict", text_field="body", val_fraction=0.5), 2)
    cache.prepare()
    assert all_tokens(cache) == [*b"to be or not", EOT]
    with pytest.raises(DataError, match=r"data\.hf_split: .*dict has no split 'validation'"):
        TokenCache(section(tmp_path, tmp_path / "dict", text_field="body", hf_split="validation"), 2)


def test_an_s3_prefix_is_prepared_once_and_found_by_a_second_job(
    tmp_path: Path, s3_server: S3Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in s3_server.environment().items():
        monkeypatch.setenv(name, value)
    bucket = s3_server.new_bucket()
    client = s3_server.client()
    client.put_object(Bucket=bucket, Key="corpus/a.txt", Body=b"to be or not to be")
    client.put_object(
        Bucket=bucket, Key="corpus/b.jsonl", Body=b'{"text": "that is"}\n{"text": "the question"}\n'
    )
    client.put_object(Bucket=bucket, Key="corpus/notes.md", Body=b"ignored")
    client.put_object(Bucket=bucket, Key="other/c.txt", Body=b"not under the prefix")
    data = section(tmp_path, f"s3://{bucket}/corpus", val_fraction=0.5)
    cache = TokenCache(data, block_size=2)
    _, tokenized = prepare(data, 1, cache.source)
    assert tokenized == 2
    assert all_tokens(cache) == [*b"to be or not to be", EOT, *b"that is", EOT, *b"the question", EOT]
    assert prepare(data, 1)[1] == 0  # the second job: found, nothing tokenized
    client.put_object(Bucket=bucket, Key="corpus/a.txt", Body=b"changed")
    assert TokenCache(data, block_size=2).directory != cache.directory

    missing = section(tmp_path, f"s3://{bucket}/nothing-here")
    with pytest.raises(DataError, match=r"holds no non-empty \*\.txt, \*\.jsonl or \*\.bin objects"):
        TokenCache(missing, block_size=2)


def test_parallel_preparation_writes_what_one_process_writes(tmp_path: Path) -> None:
    one = section(tmp_path / "one", SAMPLE, shard_bytes=50_000)
    two = section(tmp_path / "two", SAMPLE, shard_bytes=50_000)
    manifest, tokenized = prepare(one, 1)
    assert tokenized == len(manifest.shards) > 4
    parallel, _ = prepare(two, 2)
    assert files_of(manifest.directory) == files_of(parallel.directory)


def test_an_interrupted_preparation_resumes_without_tokenizing_twice(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = section(tmp_path / "resumed", SAMPLE, shard_bytes=50_000)
    real = prepare_module.tokenize_unit
    calls: list[int] = []

    def dies_at_the_fourth(*args: Any) -> Any:
        calls.append(1)
        if len(calls) == 4:
            raise KeyboardInterrupt  # the process killed mid-preparation
        return real(*args)

    monkeypatch.setattr(prepare_module, "tokenize_unit", dies_at_the_fourth)
    with pytest.raises(KeyboardInterrupt):
        prepare(data, 1)
    directory = prepared_directory(data, resolve_source(data))
    assert sorted(p.name for p in directory.glob("shard_*")) == [
        shard_path(directory, i).name for i in range(3)
    ]
    assert not (directory / "manifest.json").exists() and not list(directory.glob(".*.tmp"))
    monkeypatch.setattr(prepare_module, "tokenize_unit", real)
    manifest, tokenized = prepare(data, 1)
    assert tokenized == len(manifest.shards) - 3  # the three published shards were not tokenized again
    fresh, _ = prepare(section(tmp_path / "fresh", SAMPLE, shard_bytes=50_000), 1)
    assert files_of(manifest.directory) == files_of(fresh.directory)


# A preparer as a separate process (a node's launcher), slowed to 0.2 s a shard so that two overlap.
SLOW_PREPARER = r"""
import json, sys, time
from trainer import prepare as p
from trainer.config import load_config
real = p.tokenize_unit
def slow(*args):
    time.sleep(0.2)
    return real(*args)
p.tokenize_unit = slow
data = load_config(None, ["model.preset=tiny", "train.max_steps=1", "checkpoint.dir=x", "checkpoint.every_steps=1",
                          "output.dir=x", "data.encoding=bytes", f"data.path={sys.argv[1]}",
                          f"data.cache_dir={sys.argv[2]}", "data.shard_bytes=20000"]).data
manifest, tokenized = p.prepare(data, 1)
print(json.dumps({"tokenized": tokenized, "shards": len(manifest.shards)}))
"""


@pytest.mark.slow
def test_two_preparers_racing_on_one_directory_split_the_work(tmp_path: Path) -> None:
    command = [sys.executable, "-c", SLOW_PREPARER, str(SAMPLE), str(tmp_path / "shared")]
    pipe = subprocess.PIPE
    racers = [subprocess.Popen(command, cwd=REPO, env=trainer_env(), text=True, stdout=pipe, stderr=pipe)
              for _ in "ab"]  # fmt: skip
    outputs = [racer.communicate(timeout=300) for racer in racers]
    for racer, (_, err) in zip(racers, outputs, strict=True):
        assert racer.returncode == 0, err[-3000:]
    reports = [json.loads(out.strip().splitlines()[-1]) for out, _ in outputs]
    shards = reports[0]["shards"]
    assert sum(r["tokenized"] for r in reports) == shards  # each shard tokenized once, by one of them
    assert all(r["tokenized"] > 0 for r in reports)  # and both did some
    alone, _ = prepare(section(tmp_path / "alone", SAMPLE, shard_bytes=20000), 1)
    racing = read_manifest(next((tmp_path / "shared").iterdir()))
    assert files_of(racing.directory) == files_of(alone.directory)


@pytest.mark.slow
def test_a_killed_preparer_leaves_whole_shards_and_a_rerun_finishes_identically(tmp_path: Path) -> None:
    command = [sys.executable, "-c", SLOW_PREPARER, str(SAMPLE), str(tmp_path / "killed")]
    process = subprocess.Popen(command, cwd=REPO, env=trainer_env(), text=True, stdout=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while len(list((tmp_path / "killed").glob("*/shard_*.bin"))) < 3 and time.monotonic() < deadline:
        time.sleep(0.02)
    process.kill()
    process.communicate()
    directory = next((tmp_path / "killed").iterdir())
    assert not (directory / "manifest.json").exists()
    rerun = subprocess.run(command, cwd=REPO, env=trainer_env(), text=True, capture_output=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    report = json.loads(rerun.stdout.strip().splitlines()[-1])
    assert report["tokenized"] <= report["shards"] - 3
    alone, _ = prepare(section(tmp_path / "alone", SAMPLE, shard_bytes=20000), 1)
    assert files_of(directory) == files_of(alone.directory)


@pytest.mark.parametrize(
    ("make", "settings", "message"),
    [
        (lambda d: (d / "empty.txt").write_text(""), {}, "is empty: 1 file(s), 0 bytes"),
        (lambda d: (d / "blank.jsonl").write_text("\n\n"), {}, "holds no text"),
        (lambda d: (d / "bad.jsonl").write_text('{"text": "ok"}\nnot json\n'), {},
         "(line 2 of bytes 0-24): not a JSON object with a string 'text' field"),
        (lambda d: (d / "n.jsonl").write_text('{"text": 3}\n'), {}, "field 'text' is not a string"),
    ],
)  # fmt: skip
def test_bad_text_is_one_line_naming_the_source_and_no_manifest(
    tmp_path: Path, make: Any, settings: dict[str, Any], message: str
) -> None:
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    make(corpus)
    with pytest.raises(DataError) as error:
        TokenCache(section(tmp_path, corpus, **settings), block_size=2).prepare()
    assert message in str(error.value) and "\n" not in str(error.value)
    assert not list(tmp_path.rglob("manifest.json")) and not list(tmp_path.rglob("*.tmp"))


def test_a_bad_unit_fails_a_pool_of_workers_with_its_line_and_no_manifest(tmp_path: Path) -> None:
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for index in range(3):
        (corpus / f"good{index}.txt").write_text("some text\n" * 50)
    (corpus / "n.jsonl").write_text('{"text": 3}\n')
    with pytest.raises(DataError, match="field 'text' is not a string"):
        prepare(section(tmp_path, corpus), 2)
    assert not list(tmp_path.rglob("manifest.json"))


def test_a_damaged_shard_is_named_when_the_data_is_opened(tmp_path: Path) -> None:
    cache = TokenCache(section(tmp_path, SAMPLE, shard_bytes=100_000), block_size=16)
    manifest = cache.prepare()
    damaged = Path(manifest.shards[2].path)
    with damaged.open("r+b") as handle:
        handle.truncate(damaged.stat().st_size - 2)
    with pytest.raises(DataError, match=rf"data: unreadable shard {damaged}: \d+ bytes, its manifest says"):
        cache.open()
    damaged.unlink()
    with pytest.raises(DataError, match=rf"data: unreadable shard {damaged}: No such file"):
        cache.open()


def test_the_command_line_prepares_and_reports_on_one_line(tmp_path: Path) -> None:
    args = [sys.executable, "-m", "trainer", "prepare", "--config", str(TINY_CONFIG), "--workers", "2",
            "--set", f"data.cache_dir={tmp_path}", "--set", "data.shard_bytes=100000"]  # fmt: skip
    first = subprocess.run(args, cwd=REPO, env=trainer_env(), text=True, capture_output=True, timeout=120)
    assert first.returncode == 0, first.stderr
    assert (
        "tokens in 7 shard(s) from 4 file(s) at trainer/data (7 tokenized now, 0 found prepared)"
        in first.stderr
    )
    again = subprocess.run(args, cwd=REPO, env=trainer_env(), text=True, capture_output=True, timeout=120)
    assert "(0 tokenized now, 7 found prepared)" in again.stderr
    bad = subprocess.run([*args, "--set", "data.path=/no/such"], cwd=REPO, env=trainer_env(), text=True,
                         capture_output=True, timeout=120)  # fmt: skip
    assert bad.returncode == 2 and bad.stderr == "error: data.path: no such file or directory: /no/such\n"
    assert byte_encoding().n_vocab == 257


def resident_file_kib() -> int:
    status = Path("/proc/self/status").read_text()
    return int(next(line.split()[1] for line in status.splitlines() if line.startswith("RssFile:")))


def test_drawing_windows_keeps_resident_memory_flat(tmp_path: Path) -> None:
    """64 MiB of tokens, 8,000 windows at random: without releasing each window's pages (and with the
    kernel's read-around) the process's mapped pages grow toward the whole file."""
    path = tmp_path / "train.bin"
    np.random.default_rng(0).integers(0, 256, 2**25, dtype=np.uint16).tofile(path)
    view = TokenView([(Shard(str(path), 0, 2**25, "uint16"), 0, 2**25)])
    view[0:10]
    before = resident_file_kib()
    rng = np.random.default_rng(1)
    for start in rng.integers(0, 2**25 - 65, 8000):
        view[int(start) : int(start) + 65]
    assert resident_file_kib() - before < 4096  # KiB: less than 4 MiB of the 64 MiB mapped
