"""Data preparation and reading, measured (docs/benchmarks.md).

    python bench/data_bench.py throughput [--mb 16] [--rounds 8]
        preparation tokens/s (wall clock, and per CPU second) on 1 and 2 CPUs (sched_setaffinity) against
        tiktoken's own encode_ordinary_batch on the same text, the same encoding and CPU count, in
        interleaved rounds; and each side's scaling from 1 CPU to 2
    python bench/data_bench.py ids [--mb 16] [--rounds 8] [--doc-chars 0]
        the CPU time of tiktoken's lists of ids, of those lists copied into an array, and of encode_to_numpy,
        on a text file's 64 KiB pieces or (--doc-chars) on short documents
    python bench/data_bench.py memory [--limit-mb 1536] [--sizes-gb 1,3,6]
        a tiny CPU training run on nanoGPT-format corpora of each size, under a cgroup (v1) memory limit:
        peak resident memory and the time to the first step, the corpus prepared beforehand

The encoding: gpt2's files cannot be downloaded on this machine, so throughput uses a stand-in with gpt2's
split pattern and 32,768 ranks (the 256 bytes, then the sample's most frequent pre-tokens and their prefixes),
the same for both sides of the comparison.
"""

from __future__ import annotations

import argparse
import array
import collections
import gc
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import regex
import tiktoken

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from trainer import prepare as prepare_module  # noqa: E402
from trainer.config import load_config  # noqa: E402
from trainer.sources import _text_pieces  # noqa: E402

GPT2_PATTERN = r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
SAMPLE = REPO / "trainer" / "data"
# `python -m trainer` that prints its own peak resident memory on stderr at the end: VmHWM, which starts afresh
# at exec (getrusage's ru_maxrss would carry the forking parent's peak over execve).
TRAIN_REPORTING_PEAK = (
    "import re, sys\nfrom trainer.cli import main\ncode = main(sys.argv[1:])\n"
    "hwm = re.search(r'VmHWM:\\s+(\\d+) kB', open('/proc/self/status').read()).group(1)\n"
    "print('PEAK_RSS_KB', hwm, file=sys.stderr)\nsys.exit(code)"
)


def stand_in_encoding(ranks: int = 32768) -> tiktoken.Encoding:
    text = "".join(p.read_text() for p in sorted(SAMPLE.glob("*.txt")))
    counts = collections.Counter(regex.findall(GPT2_PATTERN, text))
    vocabulary = {bytes([i]): i for i in range(256)}
    for piece, _ in counts.most_common():
        encoded = piece.encode()
        for end in range(2, len(encoded) + 1):
            if len(vocabulary) < ranks and encoded[:end] not in vocabulary:
                vocabulary[encoded[:end]] = len(vocabulary)
    return tiktoken.Encoding(
        "bench", pat_str=GPT2_PATTERN, mergeable_ranks=vocabulary, special_tokens={"<|endoftext|>": ranks}
    )


def _timed(run: Callable[[], int]) -> dict[str, float]:
    """Run once: tokens, wall seconds, and CPU seconds of this process and of the children it waited for (the
    preparation's pool), the load average before."""
    gc.collect()
    load = os.getloadavg()[0]
    before, children = time.process_time(), resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    tokens = run()
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    child_cpu = after.ru_utime + after.ru_stime - children.ru_utime - children.ru_stime
    return {"tokens": tokens, "wall": wall, "cpu": time.process_time() - before + child_cpu, "load": load}


def _corpus(directory: Path, mb: int, files: int = 8) -> list[str]:
    """`files` text files of about mb/files MiB each (the bundled plays repeated); their texts."""
    sample = "".join(p.read_text() for p in sorted(SAMPLE.glob("*.txt")))
    directory.mkdir()
    per_file = sample * max(1, mb * 2**20 // files // len(sample))
    for i in range(files):
        (directory / f"part{i}.txt").write_text(per_file)
    return [p.read_text() for p in sorted(directory.iterdir())]


def _median(values: list[float]) -> float:
    return float(np.median(values))


def throughput(args: argparse.Namespace) -> None:
    """Rounds of four runs (tiktoken and ours, on 1 CPU and on 2), the order reversed every other round so that
    a drift of the machine's load weighs on both sides alike; each ratio is taken within a round (a pair run
    seconds apart) and the median over rounds reported, with the best-of-rounds figures beside it."""
    encoding = stand_in_encoding()
    prepare_module.get_encoding = lambda name: encoding  # the stand-in, whatever data.encoding names
    everything = sorted(os.sched_getaffinity(0))
    with tempfile.TemporaryDirectory(prefix="data-bench-") as tmp:
        corpus = Path(tmp) / "corpus"
        texts = _corpus(corpus, args.mb)
        runs = 0

        def tiktoken_side(cpus: int) -> int:
            return sum(len(t) + 1 for t in encoding.encode_ordinary_batch(texts, num_threads=cpus))

        def prepare_side(cpus: int) -> int:
            nonlocal runs
            runs += 1
            data = load_config(
                None, ["model.preset=tiny", "train.max_steps=1", "checkpoint.dir=x", "checkpoint.every_steps=1",
                       "output.dir=x", "data.encoding=gpt2", f"data.path={corpus}",
                       f"data.cache_dir={tmp}/cache-{runs}", f"data.shard_bytes={args.shard_mb * 2**20}"],
            ).data  # fmt: skip
            manifest, tokenized = prepare_module.prepare(data, cpus)
            assert tokenized == len(manifest.shards)  # a fresh directory each run: everything tokenized
            return manifest.tokens

        sides = {"tiktoken": tiktoken_side, "prepare": prepare_side}
        plan = [(side, cpus) for cpus in (1, 2) for side in sides]
        rounds: list[dict[tuple[str, int], dict[str, float]]] = []
        for number in range(args.rounds):
            measured = {}
            for side, cpus in plan if number % 2 == 0 else plan[::-1]:
                os.sched_setaffinity(0, set(everything[:cpus]))
                measured[side, cpus] = _timed(lambda: sides[side](cpus))  # noqa: B023
                os.sched_setaffinity(0, set(everything))
            rounds.append(measured)
            print(json.dumps({f"{s}/{c}": {k: round(v, 3) for k, v in m.items()} for (s, c), m in measured.items()}),
                  file=sys.stderr, flush=True)  # fmt: skip

        def rate(side: str, cpus: int, clock: str) -> list[float]:
            return [r[side, cpus]["tokens"] / r[side, cpus][clock] for r in rounds]

        results: dict[str, Any] = {"rounds": args.rounds, "mb": args.mb,
                                   "tokens": int(rounds[0]["tiktoken", 1]["tokens"])}  # fmt: skip
        for cpus in (1, 2):
            row: dict[str, float] = {}
            for clock in ("wall", "cpu"):
                base, ours = rate("tiktoken", cpus, clock), rate("prepare", cpus, clock)
                unit = "tokens_per_s" if clock == "wall" else "tokens_per_cpu_s"
                row[f"tiktoken_{unit}_median"] = round(_median(base))
                row[f"prepare_{unit}_median"] = round(_median(ours))
                row[f"ratio_{clock}_median_of_rounds"] = round(
                    _median([o / b for o, b in zip(ours, base, strict=True)]), 3
                )
                row[f"ratio_{clock}_best"] = round(max(ours) / max(base), 3)
            results[f"{cpus}_cpu"] = row
        for side in sides:
            one, two = rate(side, 1, "wall"), rate(side, 2, "wall")
            results[f"{side}_2_cpus_over_1_median_of_rounds"] = round(
                _median([t / o for t, o in zip(two, one, strict=True)]), 3
            )
        loads = [m["load"] for r in rounds for m in r.values()]
        results["load_average_1min"] = [round(min(loads), 2), round(max(loads), 2)]
        print(json.dumps(results, indent=1))


def ids(args: argparse.Namespace) -> None:
    """Where the preparation's time went besides the encoder (1 CPU, CPU seconds, interleaved rounds): the
    throughput baseline's call (encode_ordinary_batch on the whole texts), the same on the 64 KiB pieces that
    trainer.sources cuts, those lists copied into an array (the preparation until 2026-12-05), and
    encode_to_numpy's buffers (trainer.prepare.encode_ids, since)."""
    encoding = stand_in_encoding()
    os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})
    with tempfile.TemporaryDirectory(prefix="data-bench-") as tmp:
        texts = _corpus(Path(tmp) / "corpus", args.mb)
    if args.doc_chars:  # short documents (JSONL lines, dataset rows) instead of a text file's pieces
        pieces = [text[i : i + args.doc_chars] for text in texts for i in range(0, len(text), args.doc_chars)]
    else:
        pieces = [piece for text in texts for piece, _ in _text_pieces(text, True)]

    def whole_texts() -> int:  # the throughput baseline's own call
        return sum(len(t) for t in encoding.encode_ordinary_batch(texts, num_threads=1))

    def lists() -> int:
        return sum(len(t) for t in encoding.encode_ordinary_batch(pieces, num_threads=1))

    def lists_into_array() -> int:
        buffer = array.array("H")
        for tokens in encoding.encode_ordinary_batch(pieces, num_threads=1):
            buffer.extend(tokens)
        return len(buffer)

    def buffers() -> int:
        return len(np.concatenate([prepare_module.encode_ids(encoding, p) for p in pieces], dtype=np.uint16))

    ways = {
        "whole_texts": whole_texts,
        "lists": lists,
        "lists_into_array": lists_into_array,
        "encode_to_numpy": buffers,
    }
    seconds: dict[str, list[float]] = {name: [] for name in ways}
    for number in range(args.rounds):
        for name in ways if number % 2 == 0 else reversed(ways):
            seconds[name].append(_timed(ways[name])["cpu"])
    whole_s = _median(seconds["whole_texts"])
    print(json.dumps({name: {"cpu_s_median": round(_median(s), 3), "over_whole_texts": round(_median(s) / whole_s, 3)}
                      for name, s in seconds.items()} | {"load_average_1min": os.getloadavg()[0]}, indent=1))  # fmt: skip


def memory(args: argparse.Namespace) -> None:
    cgroup = Path("/sys/fs/cgroup/memory") / f"trainstack-data-bench-{os.getpid()}"
    cgroup.mkdir()
    (cgroup / "memory.limit_in_bytes").write_text(str(args.limit_mb * 2**20))
    rows = []
    try:
        with tempfile.TemporaryDirectory(prefix="data-bench-", dir=args.dir) as tmp:
            for size_gb in [float(s) for s in args.sizes_gb.split(",")]:
                corpus = Path(tmp) / f"corpus-{size_gb}"
                corpus.mkdir()
                tokens = int(size_gb * 2**30) // 2
                with (corpus / "train.bin").open("wb") as handle:
                    rng = np.random.default_rng(0)
                    chunk = 2**24
                    for start in range(0, tokens, chunk):
                        handle.write(
                            rng.integers(0, 256, min(chunk, tokens - start), dtype=np.uint16).tobytes()
                        )
                run = Path(tmp) / f"run-{size_gb}"
                overrides = [f"data.path={corpus}", f"data.cache_dir={run}/cache", f"checkpoint.dir={run}/ck",
                             f"output.dir={run}/out", "train.max_steps=30", "train.eval_every=0",
                             "checkpoint.every_steps=1000", "output.log_every=10"]  # fmt: skip
                sets = [a for o in overrides for a in ("--set", o)]
                env = {**os.environ, "DS_ACCELERATOR": "cpu", "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": "",
                       "PYTHONPATH": str(REPO)}  # fmt: skip
                config = str(REPO / "trainer" / "configs" / "tiny.yaml")
                prepared = subprocess.run([sys.executable, "-m", "trainer", "prepare", "--config", config, *sets],
                                          env=env, capture_output=True, text=True)  # fmt: skip
                assert prepared.returncode == 0, prepared.stderr

                def enter_cgroup() -> None:
                    (cgroup / "cgroup.procs").write_text(str(os.getpid()))

                trained = subprocess.run([sys.executable, "-c", TRAIN_REPORTING_PEAK, "train", "--config", config,
                                          *sets], env=env, capture_output=True, text=True, preexec_fn=enter_cgroup)  # fmt: skip
                assert trained.returncode == 0, trained.stderr[-3000:]
                peak_mb = int(trained.stderr.split("PEAK_RSS_KB ")[1].split()[0]) / 1024
                start = next(json.loads(line) for line in trained.stdout.splitlines() if '"start"' in line)
                rows.append({"corpus_gb": size_gb, "limit_mb": args.limit_mb, "peak_rss_mb": round(peak_mb),
                             "tokens": start["tokens"],
                             "data_s": start["data_s"], "time_to_first_step_s": start["time_to_first_step_s"]})  # fmt: skip
                print(json.dumps(rows[-1]), flush=True)
                (corpus / "train.bin").unlink()
    finally:
        cgroup.rmdir()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("command", choices=["throughput", "ids", "memory"])
    parser.add_argument("--mb", type=int, default=16, help="throughput, ids: MiB of text (8 files)")
    parser.add_argument("--shard-mb", type=int, default=8, help="throughput: data.shard_bytes, MiB")
    parser.add_argument("--doc-chars", type=int, default=0, help="ids: documents of this many characters")
    parser.add_argument("--rounds", type=int, default=8, help="throughput, ids: interleaved rounds")
    parser.add_argument("--limit-mb", type=int, default=1536, help="memory: the cgroup's limit")
    parser.add_argument("--sizes-gb", default="1,3,6", help="memory: corpus sizes, GiB, comma-separated")
    parser.add_argument("--dir", default=None, help="memory: where the corpora go (default: TMPDIR)")
    args = parser.parse_args()
    {"throughput": throughput, "ids": ids, "memory": memory}[args.command](args)


if __name__ == "__main__":
    main()
