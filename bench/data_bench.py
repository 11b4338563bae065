"""Data preparation and reading, measured (docs/benchmarks.md).

    python bench/data_bench.py throughput [--mb 64] [--repeats 3]
        preparation tokens/s on 1 and 2 CPUs (sched_setaffinity) against tiktoken's own
        encode_ordinary_batch on the same text, the same encoding and CPU count
    python bench/data_bench.py memory [--limit-mb 1536] [--sizes-gb 1,3,6]
        a tiny CPU training run on nanoGPT-format corpora of each size, under a cgroup (v1) memory limit:
        peak resident memory and the time to the first step, the corpus prepared beforehand

The encoding: gpt2's files cannot be downloaded on this machine, so throughput uses a stand-in with gpt2's
split pattern and 32,768 ranks (the 256 bytes, then the sample's most frequent pre-tokens and their prefixes),
the same for both sides of the comparison.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import regex
import tiktoken

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from trainer import prepare as prepare_module  # noqa: E402
from trainer.config import load_config  # noqa: E402

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


def throughput(args: argparse.Namespace) -> None:
    encoding = stand_in_encoding()
    prepare_module.get_encoding = lambda name: encoding  # the stand-in, whatever data.encoding names
    sample = "".join(p.read_text() for p in sorted(SAMPLE.glob("*.txt")))
    with tempfile.TemporaryDirectory(prefix="data-bench-") as tmp:
        corpus = Path(tmp) / "corpus"
        corpus.mkdir()
        files = 8
        per_file = sample * max(1, args.mb * 2**20 // files // len(sample))
        for i in range(files):
            (corpus / f"part{i}.txt").write_text(per_file)
        texts = [p.read_text() for p in sorted(corpus.iterdir())]
        results: dict[str, Any] = {}
        for cpus in (1, 2):
            os.sched_setaffinity(0, set(sorted(os.sched_getaffinity(0))[:cpus]))
            best_base, best_ours, tokens = 0.0, 0.0, 0
            for repeat in range(args.repeats):
                start = time.perf_counter()
                encoded = encoding.encode_ordinary_batch(texts, num_threads=cpus)
                tokens = sum(len(t) for t in encoded) + len(texts)
                best_base = max(best_base, tokens / (time.perf_counter() - start))
                del encoded
                data = load_config(
                    None, ["model.preset=tiny", "train.max_steps=1", "checkpoint.dir=x", "checkpoint.every_steps=1",
                           "output.dir=x", "data.encoding=gpt2", f"data.path={corpus}",
                           f"data.cache_dir={tmp}/cache-{cpus}-{repeat}", "data.shard_bytes=8388608"],
                ).data  # fmt: skip
                start = time.perf_counter()
                manifest, _ = prepare_module.prepare(data, cpus)
                best_ours = max(best_ours, manifest.tokens / (time.perf_counter() - start))
                assert abs(manifest.tokens - tokens) < tokens / 1000  # cut after newlines: a few differ
            results[str(cpus)] = {"tiktoken_tokens_per_s": round(best_base), "prepare_tokens_per_s": round(best_ours),
                             "ratio": round(best_ours / best_base, 3), "tokens": tokens}  # fmt: skip
            os.sched_setaffinity(0, set(range(os.cpu_count() or 1)))
        results["scaling_1_to_2"] = round(
            results["2"]["prepare_tokens_per_s"] / results["1"]["prepare_tokens_per_s"], 3
        )
        print(json.dumps(results, indent=1))


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
    parser.add_argument("command", choices=["throughput", "memory"])
    parser.add_argument("--mb", type=int, default=64, help="throughput: MiB of text")
    parser.add_argument("--repeats", type=int, default=3, help="throughput: best of this many")
    parser.add_argument("--limit-mb", type=int, default=1536, help="memory: the cgroup's limit")
    parser.add_argument("--sizes-gb", default="1,3,6", help="memory: corpus sizes, GiB, comma-separated")
    parser.add_argument("--dir", default=None, help="memory: where the corpora go (default: TMPDIR)")
    args = parser.parse_args()
    throughput(args) if args.command == "throughput" else memory(args)


if __name__ == "__main__":
    main()
