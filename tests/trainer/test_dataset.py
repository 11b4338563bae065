"""trainer.dataset: offline encoding, source-keyed prepared token shards, deterministic per-rank windows."""

from __future__ import annotations

import builtins
import dataclasses
import json
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import tiktoken

from trainer.config import load_config
from trainer.dataset import DataError, TokenCache, train_batch, val_batch
from trainer.prepare import byte_encoding, get_encoding, token_dtype
from trainer.shards import MANIFEST, TokenView
from trainer.sources import find_text_files

from .conftest import REPO, TINY_CONFIG, trainer_env

SAMPLE = REPO / "trainer" / "data"


def data_section(tmp_path: Path, **settings: Any) -> Any:
    overrides = [f"data.cache_dir={tmp_path / 'cache'}", *(f"data.{k}={v}" for k, v in settings.items())]
    return load_config(TINY_CONFIG, overrides).data


def test_bytes_encoding_round_trips_any_text() -> None:
    encoding = get_encoding("bytes")
    text = "Hamlet — «to be», 生"
    assert encoding.decode(encoding.encode_ordinary(text)) == text
    assert encoding.n_vocab == 257 and encoding.eot_token == 256
    assert max(encoding.encode_ordinary(text)) < 256


def test_bundled_corpus_is_real_english_and_small() -> None:
    files = find_text_files(str(SAMPLE))
    assert len(files) >= 2
    assert sum(f.stat().st_size for f in files) <= 1_000_000
    text = " ".join(f.read_text() for f in files)
    assert text.count(" the ") > 1000
    assert "licence" in (SAMPLE / "README.md").read_text().lower()


def test_cache_is_built_once_and_keyed_by_content(tmp_path: Path) -> None:
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "a.txt").write_text("to be or not to be " * 50)
    (corpus / "b.txt").write_text("that is the question " * 50)
    section = data_section(tmp_path, path=corpus)
    cache = TokenCache(section, block_size=16)
    cache.prepare()
    data = cache.open()
    tokens = np.concatenate([data.train[:], data.val[:]])
    encoding = byte_encoding()
    expected = [*encoding.encode_ordinary((corpus / "a.txt").read_text()), 256]
    assert tokens[: len(expected)].tolist() == expected
    assert int((tokens == 256).sum()) == 2  # one end-of-text after each document
    assert len(data.val) == int(len(tokens) * 0.1)
    # no temporary left behind; the shard locks stay (removing one could let two preparers in)
    assert [p.name for p in (tmp_path / "cache").iterdir()] == [cache.directory.name]
    names = sorted(p.name for p in cache.directory.iterdir())
    assert names == [".locks", "manifest.json", "shard_000000.bin", "shard_000001.bin"]

    mtime = (cache.directory / MANIFEST).stat().st_mtime_ns
    TokenCache(section, block_size=16).prepare()
    assert (cache.directory / MANIFEST).stat().st_mtime_ns == mtime  # reused, not rebuilt
    (corpus / "b.txt").write_text("a different play " * 60)
    assert TokenCache(section, block_size=16).directory != cache.directory


def test_glob_selects_files(tmp_path: Path) -> None:
    (tmp_path / "x.txt").write_text("x")
    (tmp_path / "y.md").write_text("y")
    assert [p.name for p in find_text_files(str(tmp_path / "*.md"))] == ["y.md"]
    assert [p.name for p in find_text_files(str(tmp_path))] == ["x.txt"]


def test_windows_are_deterministic_per_rank_and_step(tmp_path: Path) -> None:
    cache = TokenCache(data_section(tmp_path, path=SAMPLE), block_size=32)
    cache.prepare()
    data = cache.open()
    inputs, targets = train_batch(data, 4, 32, seed=1, rank=0, step=5, micro_step=0)
    assert inputs.shape == targets.shape == (4, 32) and inputs.dtype == np.int64
    assert np.array_equal(inputs[:, 1:], targets[:, :-1])  # targets are the next tokens
    assert np.array_equal(inputs, train_batch(data, 4, 32, seed=1, rank=0, step=5, micro_step=0)[0])
    for other in [
        dict(rank=1, step=5, micro_step=0),
        dict(rank=0, step=6, micro_step=0),
        dict(rank=0, step=5, micro_step=1),
    ]:
        assert not np.array_equal(inputs, train_batch(data, 4, 32, seed=1, **other)[0])
    val_inputs, _ = val_batch(data, 4, 32, seed=1, rank=0, index=0)
    assert np.array_equal(val_inputs, val_batch(data, 4, 32, seed=1, rank=0, index=0)[0])


def test_training_and_validation_windows_come_from_their_own_split(tmp_path: Path) -> None:
    """Splits that cannot be confused: 900 'a' bytes, then 99 'z' bytes and the end-of-text token. With
    data.val_fraction 0.1 the validation split is the last int(1000 * 0.1) = 100 tokens: every 'z' and the
    end-of-text; the training split is every 'a'."""
    (tmp_path / "corpus.txt").write_text("a" * 900 + "z" * 99)
    cache = TokenCache(data_section(tmp_path, path=tmp_path / "corpus.txt", val_fraction=0.1), block_size=32)
    cache.prepare()
    data = cache.open()
    for step in range(5):
        inputs, targets = train_batch(data, 4, 32, seed=1, rank=0, step=step, micro_step=0)
        assert set(np.unique(np.concatenate([inputs, targets]))) == {ord("a")}
        val_inputs, val_targets = val_batch(data, 4, 32, seed=1, rank=0, index=step)
        assert set(np.unique(np.concatenate([val_inputs, val_targets]))) <= {ord("z"), 256}


def test_each_split_needs_one_window_plus_its_target_and_the_smallest_one_is_sampled_whole(
    tmp_path: Path,
) -> None:
    """A window of block_size inputs and its shifted target take block_size + 1 tokens of each split. With
    data.val_fraction 0.5: 33 bytes + end-of-text = 34 tokens split 17/17, exactly enough for block_size 16,
    and each split's only window starts at its first token; 32 bytes + end-of-text = 33 tokens leave the
    validation split int(33 * 0.5) = 16 tokens, one short."""
    text = "abcdefghijklmnopqrstuvwxyzABCDEFG"  # 33 distinct bytes
    (tmp_path / "enough.txt").write_text(text)
    section = data_section(tmp_path, path=tmp_path / "enough.txt", val_fraction=0.5)
    cache = TokenCache(section, block_size=16)
    cache.prepare()
    data = cache.open()
    tokens = [*text.encode(), 256]
    assert (data.train[:].tolist(), data.val[:].tolist()) == (tokens[:17], tokens[17:])
    inputs, targets = train_batch(data, 2, 16, seed=1, rank=0, step=0, micro_step=0)
    assert inputs.tolist() == [tokens[:16]] * 2 and targets.tolist() == [tokens[1:17]] * 2
    val_inputs, val_targets = val_batch(data, 2, 16, seed=1, rank=0, index=0)
    assert val_inputs.tolist() == [tokens[17:33]] * 2 and val_targets.tolist() == [tokens[18:34]] * 2

    (tmp_path / "short.txt").write_text(text[:32])
    short = TokenCache(data_section(tmp_path, path=tmp_path / "short.txt", val_fraction=0.5), block_size=16)
    short.prepare()  # whole data, only too short for this context
    with pytest.raises(DataError) as error:
        short.open()
    assert str(error.value).startswith(
        f"data: 1 file(s) at {tmp_path / 'short.txt'} gives 33 tokens, too short for model.block_size=16: "
        "both the training split (17) and the validation split (16, data.val_fraction=0.5 or the *val* token "
        "files) need at least 17 tokens"
    )


def test_token_ids_take_the_smallest_unsigned_type_that_holds_the_vocabulary() -> None:
    def vocabulary(size: int) -> Any:
        return SimpleNamespace(n_vocab=size)

    assert token_dtype(vocabulary(257)) is np.uint16
    assert token_dtype(vocabulary(2**16)) is np.uint16  # ids 0..65535
    assert token_dtype(vocabulary(2**16 + 1)) is np.uint32
    assert token_dtype(vocabulary(100_277)) is np.uint32  # cl100k_base
    assert byte_encoding().name == "bytes"


def test_files_are_read_as_utf_8_with_bad_bytes_replaced_and_globs_recurse(tmp_path: Path) -> None:
    nested = tmp_path / "plays" / "act1"
    nested.mkdir(parents=True)
    (nested / "scene.txt").write_bytes(b"caf\xe9 " * 20)  # Latin-1, not UTF-8
    (tmp_path / "plays" / "prologue.txt").write_text("Two households " * 3)
    pattern = str(tmp_path / "plays" / "**" / "*.txt")
    assert [p.name for p in find_text_files(pattern)] == ["scene.txt", "prologue.txt"]
    cache = TokenCache(data_section(tmp_path, path=nested / "scene.txt", val_fraction=0.5), block_size=8)
    cache.prepare()
    data = cache.open()
    replacement = list("\ufffd".encode())  # U+FFFD in UTF-8
    assert np.concatenate([data.train[:], data.val[:]]).tolist() == [*([*b"caf", *replacement, 32] * 20), 256]
    assert data.describe == f"1 file(s) at {nested / 'scene.txt'}"
    assert data.vocab_size == 257
    assert isinstance(data.train, TokenView) and isinstance(data.val, TokenView)
    assert all(not m.flags.writeable for _, m in data.train.maps.values())  # mapped read-only: shared


def test_an_encoding_that_cannot_load_says_what_it_needs(monkeypatch: pytest.MonkeyPatch) -> None:
    asked: list[str] = []

    def offline(name: str) -> Any:
        asked.append(name)
        raise ConnectionError("no route to the tokenizer host")

    monkeypatch.setattr(tiktoken, "get_encoding", offline)
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", "/cache/tiktoken")
    with pytest.raises(DataError) as error:
        get_encoding("gpt2")
    assert str(error.value) == (
        "data.encoding: cannot load 'gpt2' (ConnectionError); it needs a download or a TIKTOKEN_CACHE_DIR "
        "that holds it (currently /cache/tiktoken); 'bytes' needs neither"
    )
    assert asked == ["gpt2"]
    monkeypatch.delenv("TIKTOKEN_CACHE_DIR")
    with pytest.raises(DataError, match=r"\(currently unset\)"):
        get_encoding("gpt2")
    monkeypatch.setattr(tiktoken, "get_encoding", lambda name: f"the {name} encoding")
    assert get_encoding("gpt2") == "the gpt2 encoding"


def test_caches_go_into_a_new_nested_directory_and_share_an_existing_one(tmp_path: Path) -> None:
    cache_dir = tmp_path / "shared" / "runs" / "cache"  # none of it exists yet
    paths = []
    for word in ("to be or not ", "that is the question "):
        (tmp_path / "corpus.txt").write_text(word * 20)
        cache = TokenCache(data_section(tmp_path, path=tmp_path / "corpus.txt", cache_dir=cache_dir), 16)
        cache.prepare()
        paths.append(cache.directory / MANIFEST)
    assert sorted(p.name for p in cache_dir.iterdir()) == sorted(p.parent.name for p in paths)
    assert paths[0] != paths[1] and all(p.is_file() for p in paths)


def test_hugging_face_without_the_package_names_the_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "datasets", None)  # `import datasets` raises ImportError
    with pytest.raises(DataError) as error:
        TokenCache(data_section(tmp_path, hf_dataset="user/plays"), block_size=16)
    assert str(error.value) == "data.hf_dataset needs the 'datasets' package: pip install datasets"


class FakeDataset:
    """What hf_source reads of a datasets.Dataset: column names, a fingerprint, a column's values."""

    def __init__(self, fingerprint: str) -> None:
        self.column_names = ["text", "label"]
        self._fingerprint = fingerprint
        self.columns: dict[str, list[Any]] = {"text": ["to be", "or not"], "label": [0, 1]}

    def __getitem__(self, column: str) -> list[Any]:
        return self.columns[column]

    def __len__(self) -> int:
        return len(self.columns["text"])

    def select(self, rows: range) -> dict[str, list[Any]]:
        return {name: [values[i] for i in rows] for name, values in self.columns.items()}


def test_a_hugging_face_dataset_is_loaded_with_its_config_split_and_token(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    loaded: list[tuple[Any, ...]] = []
    fingerprint = ["fingerprint-1"]

    def load_dataset(name: str, config: str | None, *, split: str, token: str | None) -> FakeDataset:
        loaded.append((name, config, split, token))
        if split == "missing":
            raise ValueError("Unknown split 'missing'")
        return FakeDataset(fingerprint[0])

    monkeypatch.setitem(sys.modules, "datasets", SimpleNamespace(load_dataset=load_dataset))
    monkeypatch.setenv("HF_TOKEN", "hf_not_a_real_token")
    settings = dict(hf_dataset="user/plays", hf_config="small", hf_split="train", val_fraction=0.5)
    cache = TokenCache(data_section(tmp_path, **settings), block_size=2)
    assert loaded == [("user/plays", "small", "train", "hf_not_a_real_token")]
    cache.prepare()
    assert set(loaded) == {("user/plays", "small", "train", "hf_not_a_real_token")}
    data = cache.open()
    assert np.concatenate([data.train[:], data.val[:]]).tolist() == [*b"to be", 256, *b"or not", 256]
    assert data.describe == "Hugging Face dataset user/plays"
    assert TokenCache(data_section(tmp_path, **settings), block_size=2).directory == cache.directory
    fingerprint[0] = "fingerprint-2"  # the dataset changed upstream: another cache
    assert TokenCache(data_section(tmp_path, **settings), block_size=2).directory != cache.directory

    with pytest.raises(DataError) as error:
        TokenCache(data_section(tmp_path, **{**settings, "text_field": "body"}), block_size=2)
    assert str(error.value) == "data.text_field: 'body' is not a column of 'user/plays'; columns: text, label"
    with pytest.raises(DataError) as error:
        TokenCache(data_section(tmp_path, **{**settings, "hf_split": "missing"}), block_size=2)
    assert (
        str(error.value)
        == "data.hf_dataset: cannot load 'user/plays' split 'missing': Unknown split 'missing'"
    )


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"path": "/no/such/corpus"}, "data.path: no such file or directory: /no/such/corpus"),
        ({"path": "/no/such/*.txt"}, "data.path: glob '/no/such/*.txt' matches no files"),
        ({"path": str(REPO / "trainer" / "configs")}, "holds no *.txt, *.jsonl or *.bin files"),
        (
            {"path": str(SAMPLE), "encoding": "klingon"},
            "data.encoding: unknown encoding 'klingon'; allowed: bytes, ",
        ),
    ],
)
def test_unusable_data_is_one_clear_error(tmp_path: Path, settings: dict[str, str], message: str) -> None:
    with pytest.raises(DataError) as error:
        TokenCache(data_section(tmp_path, **settings), block_size=16).prepare()
    assert message in str(error.value)


def test_data_shorter_than_a_block_fails_when_opened_with_nothing_half_written(tmp_path: Path) -> None:
    (tmp_path / "short.txt").write_text("too short")
    cache = TokenCache(data_section(tmp_path, path=tmp_path / "short.txt"), block_size=64)
    cache.prepare()
    with pytest.raises(DataError, match=r"gives 10 tokens, too short for model\.block_size=64"):
        cache.open()
    assert not [p for p in cache.directory.rglob("*") if p.name.endswith(".tmp")]


def test_hugging_face_without_datasets_package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real_import = builtins.__import__

    def no_datasets(name: str, *args: Any, **kwargs: Any) -> Any:
        if name == "datasets":
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_datasets)
    with pytest.raises(
        DataError, match=r"data\.hf_dataset needs the 'datasets' package: pip install datasets"
    ):
        TokenCache(data_section(tmp_path, hf_dataset="tiny_shakespeare"), block_size=16)


# One builder of a shared token cache, as each node's local rank 0 runs it. Both builders start together;
# the first fsync of a file each writes waits (3 s at most) for the other builder to get there too, so that
# where both write, both publish at the same moment: the collision happens every time, not by chance.
# argv: rendezvous directory, cache directory, corpus file, "nolock" to act as NFS without a lock service.
CONCURRENT_BUILDER = r"""
import errno, fcntl, json, os, sys, time, uuid
from pathlib import Path
from trainer.config import load_config
from trainer.dataset import TokenCache
from trainer.prepare import prepare

rendezvous, cache_dir, corpus, locking = Path(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
me = uuid.uuid4().hex

def wait_for(prefix, timeout):
    deadline = time.monotonic() + timeout
    while len(list(rendezvous.glob(prefix + "-*"))) < 2 and time.monotonic() < deadline:
        time.sleep(0.005)

written, real_fsync = [], os.fsync
def fsync_together(descriptor):
    if not written:
        written.append(descriptor)
        (rendezvous / f"wrote-{me}").touch()
        wait_for("wrote", 3.0)
    real_fsync(descriptor)
os.fsync = fsync_together
if locking == "nolock":
    def no_lock_service(*args):
        raise OSError(errno.ENOLCK, "No locks available")
    fcntl.lockf = no_lock_service

config = load_config(None, ["model.preset=tiny", "train.max_steps=1", "checkpoint.dir=x",
                            "checkpoint.every_steps=1", "output.dir=x", "data.encoding=bytes",
                            f"data.path={corpus}", f"data.cache_dir={cache_dir}"])
cache = TokenCache(config.data, block_size=16)
(rendezvous / f"ready-{me}").touch()
wait_for("ready", 60.0)
manifest, tokenized = prepare(config.data, 1, cache.source)
print(json.dumps({"pid": os.getpid(), "tokenized": tokenized, "cache": cache.directory.name}))
"""


def pid_namespaces_available() -> bool:
    if shutil.which("unshare") is None:
        return False
    probe = subprocess.run(["unshare", "--pid", "--fork", "--mount-proc", "true"], capture_output=True)
    return probe.returncode == 0


@pytest.mark.slow
@pytest.mark.skipif(not pid_namespaces_available(), reason="needs unshare --pid (root or CAP_SYS_ADMIN)")
@pytest.mark.parametrize("locking", ["lock", "nolock"])
def test_two_nodes_build_one_shared_cache_at_once(tmp_path: Path, locking: str) -> None:
    """Issue 18 case 4: two containers (each trainer PID 1, as in a pod) prepare the same data on a shared
    volume at the same moment. Both succeed, the shard is whole; with a lock service only one tokenizes it,
    without one (NFS mounted nolock) both do and the first to publish wins."""
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("To be, or not to be, that is the question. " * 40)
    rendezvous, cache_dir = tmp_path / "rendezvous", tmp_path / "shared" / "cache"
    rendezvous.mkdir()
    command = ["unshare", "--pid", "--fork", "--mount-proc", sys.executable, "-c", CONCURRENT_BUILDER,
               str(rendezvous), str(cache_dir), str(corpus), locking]  # fmt: skip
    env, pipe = trainer_env(), subprocess.PIPE
    builders = [
        subprocess.Popen(command, cwd=REPO, env=env, text=True, stdout=pipe, stderr=pipe) for _ in "ab"
    ]
    outputs = [builder.communicate(timeout=120) for builder in builders]
    for builder, (_, err) in zip(builders, outputs, strict=True):
        assert builder.returncode == 0, err[-3000:]
    reports = [json.loads(out.strip().splitlines()[-1]) for out, _ in outputs]
    assert [r["pid"] for r in reports] == [1, 1]  # the condition of the bug: the same PID on both nodes
    assert sum(r["tokenized"] for r in reports) == (1 if locking == "lock" else 2)

    encoding = byte_encoding()
    expected = np.asarray([*encoding.encode_ordinary(corpus.read_text()), 256], dtype=np.uint16)
    prepared = cache_dir / reports[0]["cache"]
    assert np.array_equal(np.fromfile(prepared / "shard_000000.bin", dtype=np.uint16), expected)  # whole
    assert sorted(p.name for p in prepared.iterdir()) == [".locks", "manifest.json", "shard_000000.bin"]


def test_a_cache_of_another_encoding_is_refused_naming_both(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache = TokenCache(data_section(tmp_path, path=SAMPLE), block_size=16)
    manifest = cache.prepare()
    other = "bytes" if manifest.encoding != "bytes" else "gpt2"
    monkeypatch.setattr(
        "trainer.dataset.read_manifest", lambda _: dataclasses.replace(manifest, encoding=other)
    )
    with pytest.raises(DataError) as error:
        cache.open()
    assert (
        str(error.value)
        == f"data: {cache.directory} holds {other} tokens, data.encoding is {cache.data.encoding}"
    )


# (what is called, the call prepare gets: its workers, or None where the rank waits for the manifest instead)
READY_CASES = [
    ("ready(0)", lambda cache: cache.ready(0), 0),
    ("ready(1)", lambda cache: cache.ready(1), None),
    ("ready(3)", lambda cache: cache.ready(3), None),
    ("prepare()", lambda cache: cache.prepare(), 0),
    ("prepare(3)", lambda cache: cache.prepare(3), 3),
]


@pytest.mark.parametrize(
    ("call", "workers"), [case[1:] for case in READY_CASES], ids=[case[0] for case in READY_CASES]
)
def test_local_rank_0_prepares_with_the_listed_source_and_the_others_wait_for_its_manifest(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, call: Any, workers: int | None
) -> None:
    calls: list[tuple[Any, ...]] = []

    def prepare(*args: Any) -> tuple[str, int]:
        calls.append(("prepare", *args))
        return "manifest", 0

    monkeypatch.setattr("trainer.dataset.prepare", prepare)
    monkeypatch.setattr("trainer.dataset.wait_for_manifest", lambda *args: calls.append(("wait", *args)))
    cache = TokenCache(data_section(tmp_path, path=SAMPLE), block_size=16)
    call(cache)
    waited = [("wait", cache.directory)]
    assert calls == (waited if workers is None else [("prepare", cache.data, workers, cache.source)])
