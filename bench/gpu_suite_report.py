"""summary.md for a bench/gpu_suite.sh results folder: the tables for docs/benchmarks.md and issue 17's checks.

    python bench/gpu_suite_report.py RESULTS_DIR > RESULTS_DIR/summary.md

Reads what the phases left (a phase cut off by its time limit leaves nothing, or part): environment.txt,
bench.json and batch-*.json (bench/train_throughput.py), train/ and preempt/ (the trainer's metrics.jsonl and
summary.json), preempt-stop.json. Checks, each PASS, FAIL or "not measured": every trainer path at >= 0.97 of
the plain loop (issue 17 item 1), the trainer's own MFU >= 0.50 (item 2), time to first step < 30 s (item 4).
"""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path
from typing import Any

MIN_OVER_PLAIN = 0.97
MIN_MFU = 0.50
MAX_TIME_TO_FIRST_STEP_S = 30.0
START_PARTS = ["launch_s", "startup_s", "data_s", "engine_s", "resume_s", "first_step_s"]


def read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def read_events(path: Path) -> list[dict[str, Any]]:
    try:
        lines = path.read_text().splitlines()
    except OSError:
        return []
    return [json.loads(line) for line in lines if line.startswith("{")]


def cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.3f}" if abs(value) < 10 else f"{value:.1f}" if abs(value) < 1000 else f"{value:,.0f}"
    return str(value)


def table(header: list[str], rows: list[list[Any]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    lines += ["| " + " | ".join(cell(value) for value in row) + " |" for row in rows]
    return lines


def bench_section(name: str, result: dict[str, Any]) -> list[str]:
    rows = [
        [r["path"], r["zero_stage"], r.get("engine_stage"), result["micro_batch"], r["compile"],
         r["tokens_per_sec"], r["mfu"], r["over_plain"], r["peak_memory_gib"], r.get("checkpoint_block_s"),
         r.get("checkpoint_write_s"), r.get("resume_to_first_step_s")]
        for r in result["rows"]
    ]  # fmt: skip
    header = ["path", "ZeRO", "runs as", "B", "compile", "tokens/s", "MFU", "/ plain", "peak GiB",
              "save blocks s", "write s (background)", "resume to 1st step s"]  # fmt: skip
    return [f"### {name}: {result['preset']}, T={result['block_size']}, {result['precision']}", "",
            *table(header, rows), ""]  # fmt: skip


def run_section(name: str, folder: Path) -> tuple[list[str], dict[str, Any] | None, dict[str, Any] | None]:
    events = read_events(folder / "metrics.jsonl")
    summary = read_json(folder / "summary.json")
    starts = [e for e in events if e.get("event") == "start"]
    lines = [f"### trainer run: {name}", ""]
    if not starts:
        return [*lines, "not measured (no start event)", ""], None, summary
    rows = [[s.get("resumed_from"), s.get("zero_stage"), s.get("compiled"), s.get("time_to_first_step_s"),
             *(s.get(part) for part in START_PARTS)] for s in starts]  # fmt: skip
    lines += table(["resumed from", "ZeRO", "compiled", "to 1st step s", *START_PARTS], rows)
    train = [e for e in events if e.get("event") == "train"]
    mfus = [e["mfu"] for e in train[1:] if e.get("mfu") is not None]  # the first interval holds the compile
    lines += ["", f"- train events: {len(train)}; median tokens/s after the first interval: "
              f"{cell(statistics.median(e['tokens_per_sec'] for e in train[1:]) if len(train) > 1 else None)}; "
              f"median mfu: {cell(statistics.median(mfus) if mfus else None)}"]  # fmt: skip
    if summary:
        keys = ["final_step", "final_loss", "val_loss", "tokens_per_sec", "mfu", "compile_s"]
        lines.append("- summary.json: " + ", ".join(f"{k} {cell(summary.get(k))}" for k in keys))
    checkpoints = [e for e in events if e.get("event") == "checkpoint"]
    if checkpoints:
        lines.append("- checkpoint events: " + "; ".join(json.dumps(e) for e in checkpoints))
    return [*lines, ""], starts[0], summary


def check(name: str, value: float | None, passed: bool | None) -> str:
    verdict = "not measured" if value is None or passed is None else ("PASS" if passed else "FAIL")
    return f"- {name}: {cell(value)} -> {verdict}"


def main(results: Path) -> None:
    out = ["# GPU suite results", "", "```", (results / "environment.txt").read_text().strip()
           if (results / "environment.txt").is_file() else "no environment.txt", "```", ""]  # fmt: skip
    checks: list[str] = []
    bench = read_json(results / "bench.json")
    if bench:
        out += bench_section("bench", bench)
        trainer_rows = [r for r in bench["rows"] if r["path"] == "trainer"]
        worst = min((r["over_plain"] for r in trainer_rows), default=None)
        checks.append(check(f"every trainer ZeRO path >= {MIN_OVER_PLAIN} of plain (worst)", worst,
                            None if worst is None else worst >= MIN_OVER_PLAIN))  # fmt: skip
    for path in sorted(results.glob("batch-*.json")):
        result = read_json(path)
        if result:
            out += bench_section(path.stem, result)
    first_start: dict[str, Any] | None = None
    summary: dict[str, Any] | None = None
    for name in ("train", "preempt"):
        if (results / name).is_dir():
            lines, start, run_summary = run_section(name, results / name)
            out += lines
            if name == "train":
                first_start, summary = start, run_summary
    stop = read_json(results / "preempt-stop.json")
    if stop:
        out += [f"- preemption: SIGTERM -> launcher exit {stop['stop_exit_code']} after "
                f"{stop['sigterm_to_exit_s']} s (75 expected)", ""]  # fmt: skip
    mfu = None if not summary else summary.get("mfu")
    checks.append(check(f"trainer's own mfu >= {MIN_MFU} (summary.json)", mfu,
                        None if mfu is None else mfu >= MIN_MFU))  # fmt: skip
    to_first = None if not first_start else first_start.get("time_to_first_step_s")
    checks.append(check(f"time to first step < {MAX_TIME_TO_FIRST_STEP_S} s (fresh start)", to_first,
                        None if to_first is None else to_first < MAX_TIME_TO_FIRST_STEP_S))  # fmt: skip
    out += ["## Checks", "", *checks, ""]
    for path in sorted(results.glob("*.exit")):
        out.append(f"- phase {path.stem}: exit {path.read_text().strip()}")
    print("\n".join(out))


if __name__ == "__main__":
    if len(sys.argv) != 2 or not Path(sys.argv[1]).is_dir():
        print("usage: python bench/gpu_suite_report.py RESULTS_DIR", file=sys.stderr)
        sys.exit(2)
    main(Path(sys.argv[1]))
