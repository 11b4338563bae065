#!/usr/bin/env bash
# The GPU measurement of issue 17, time-boxed, in phases, each writing into one results folder that is tarred
# after every phase (a phase cut off by the time limit still leaves the earlier ones):
#
#   1 bench     plain loop vs the trainer's engine (train.zero_stage 0 and 1 as the trainer builds them on one
#               GPU) vs DeepSpeed's ZeRO 1 as configured (the path one GPU ran before), compiled, B=SUITE_BATCH;
#               checkpoint blocking time and resume-to-first-step per engine path
#   2 train     `python -m trainer launch` on SUITE_TRAIN_CONFIG: the trainer's own tokens/s and `mfu`
#               (metrics.jsonl, summary.json) and its time to first step with its parts (start event)
#   3 batch     bench at each of SUITE_BEST_BATCHES, compiled, plain vs the trainer's ZeRO 0: the best B
#   4 preempt   the train run again, SIGTERM once a checkpoint exists (exit 75 expected), then resumed
#   report      bench/gpu_suite_report.py: summary.md from everything above
#
# Inputs (environment): SUITE_OUT (results folder; default $OUT when set, else runs/gpu-suite), SUITE_BUDGET_S
# (whole suite, default 540), SUITE_PHASES (default "bench train batch preempt"), SUITE_PRESET, SUITE_BLOCK,
# SUITE_BATCH, SUITE_BEST_BATCHES, SUITE_COMPILE (on|off|both), SUITE_BENCH_STEPS, SUITE_BENCH_REPEATS,
# SUITE_TRAIN_CONFIG, SUITE_TRAIN_STEPS, SUITE_TRAIN_SETS (extra --set values, space separated),
# SUITE_SCRATCH (checkpoints and token caches, not copied back), SUITE_TIME_SCALE (multiplies every phase's
# time limit and minimum; default 1, for the device), WHEELS (a folder of wheels installed when
# deepspeed is missing, as on the lent GPU machine), PYTHON. On CPU (DS_ACCELERATOR=cpu) see docs/benchmarks.md
# for the dry run with the tiny preset.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
PYTHON="${PYTHON:-python3}"
OUT_DIR="${SUITE_OUT:-${OUT:-$ROOT/runs/gpu-suite}}"
BUDGET_S="${SUITE_BUDGET_S:-540}"
PHASES="${SUITE_PHASES:-bench train batch preempt}"
PRESET="${SUITE_PRESET:-gpt2-124m}"
BLOCK="${SUITE_BLOCK:-1024}"
BATCH="${SUITE_BATCH:-16}"
BEST_BATCHES="${SUITE_BEST_BATCHES:-32 64}"
COMPILE="${SUITE_COMPILE:-on}"
BENCH_STEPS="${SUITE_BENCH_STEPS:-10}"
BENCH_REPEATS="${SUITE_BENCH_REPEATS:-3}"
TRAIN_CONFIG="${SUITE_TRAIN_CONFIG:-trainer/configs/gpt2-124m.yaml}"
TRAIN_STEPS="${SUITE_TRAIN_STEPS:-150}"
TRAIN_SETS="${SUITE_TRAIN_SETS:-}"
SCRATCH="${SUITE_SCRATCH:-/tmp/gpu-suite}"
WHEELS="${WHEELS:-$ROOT/.whl}"
TIME_SCALE="${SUITE_TIME_SCALE:-1}"
STARTED=$SECONDS

mkdir -p "$OUT_DIR" "$SCRATCH"
LOG="$OUT_DIR/suite.log"
log() { printf '[%4ds] %s\n' "$((SECONDS - STARTED))" "$*" | tee -a "$LOG" >&2; }

archive() {  # the results so far, as one tarball beside the folder (and inside $OUT when that is the folder)
  tar -czf "$SCRATCH/results.tar.gz" --exclude=results.tar.gz -C "$(dirname "$OUT_DIR")" "$(basename "$OUT_DIR")"
  mv "$SCRATCH/results.tar.gz" "$OUT_DIR/results.tar.gz"
}

remaining() { echo $((BUDGET_S - (SECONDS - STARTED))); }

# phase NAME LIMIT_S MIN_S: run this script's phase NAME (SUITE_RUN_PHASE) under at most min(LIMIT_S, what
# is left of the budget), skipped when less than MIN_S is left; its output in NAME.log; the results tarred
# afterwards. timeout signals the phase's whole process group (coreutils timeout without --foreground).
phase() {
  local name=$1 limit=$(($2 * TIME_SCALE)) minimum=$(($3 * TIME_SCALE))
  local left
  left=$(remaining)
  if ((left < minimum)); then
    log "skip $name: ${left}s left of the budget, it needs ${minimum}s"
    return 0
  fi
  if ((limit > left)); then limit=$left; fi
  log "start $name (limit ${limit}s)"
  local code=0
  SUITE_RUN_PHASE=$name timeout --signal=TERM --kill-after=20 "$limit" bash "${BASH_SOURCE[0]}" \
    >"$OUT_DIR/$name.log" 2>&1 || code=$?
  log "end $name: exit $code"
  echo "$code" >"$OUT_DIR/$name.exit"
  archive
}

bench() {  # bench NAME ARGS...: bench/train_throughput.py, JSON into NAME.json
  local name=$1
  shift
  "$PYTHON" bench/train_throughput.py --preset "$PRESET" --block-size "$BLOCK" --steps "$BENCH_STEPS" \
    --repeats "$BENCH_REPEATS" --compile "$COMPILE" --checkpoint-dir "$SCRATCH/bench-$name" "$@" \
    >"$OUT_DIR/$name.json"
  rm -rf "$SCRATCH/bench-$name"
}

train_sets() {  # the --set arguments of a trainer run in directory $1
  local run=$1 value
  printf -- '--set\n%s\n' "data.path=trainer/data" "data.encoding=$SUITE_ENCODING" \
    "data.cache_dir=$SCRATCH/cache" "checkpoint.dir=$run/checkpoints" "output.dir=$run/output" \
    "train.max_steps=$TRAIN_STEPS" "checkpoint.every_steps=$((TRAIN_STEPS / 3))" "train.eval_every=0" \
    "output.log_every=10"
  for value in $TRAIN_SETS; do printf -- '--set\n%s\n' "$value"; done
}

keep_outputs() {  # keep_outputs RUN NAME: metrics and summary of a trainer run into the results
  mkdir -p "$OUT_DIR/$2"
  cp "$1"/output/*.json* "$OUT_DIR/$2/" 2>/dev/null || true
}

train_run() {
  local run="$SCRATCH/train"
  rm -rf "$run"
  local sets
  mapfile -t sets < <(train_sets "$run")
  local code=0
  "$PYTHON" -m trainer launch --config "$TRAIN_CONFIG" "${sets[@]}" || code=$?
  keep_outputs "$run" train
  return "$code"
}

preempt_run() {
  local run="$SCRATCH/preempt" first=$((TRAIN_STEPS / 3))
  rm -rf "$run"
  local sets
  mapfile -t sets < <(train_sets "$run")
  "$PYTHON" -m trainer launch --config "$TRAIN_CONFIG" "${sets[@]}" &
  local launcher=$!
  local tag
  tag=$(printf 'step_%06d' "$first")
  until [ -d "$run/checkpoints/$tag" ]; do
    if ! kill -0 "$launcher" 2>/dev/null; then
      echo "the run ended before $tag existed" >&2
      wait "$launcher" || true
      keep_outputs "$run" preempt
      return 1
    fi
    sleep 0.2
  done
  local signalled=$SECONDS code=0
  kill -TERM "$launcher"
  wait "$launcher" || code=$?
  echo "{\"stop_exit_code\": $code, \"sigterm_to_exit_s\": $((SECONDS - signalled))}" >"$OUT_DIR/preempt-stop.json"
  code=0
  "$PYTHON" -m trainer launch --config "$TRAIN_CONFIG" "${sets[@]}" || code=$?
  keep_outputs "$run" preempt
  return "$code"
}

best_batch() {
  local batch
  for batch in $BEST_BATCHES; do
    bench "batch-$batch" --micro-batch "$batch" --zero-stage 0 --no-checkpoint
  done
}

if [ -n "${SUITE_RUN_PHASE:-}" ]; then  # one phase, run by phase() below under its time limit
  case "$SUITE_RUN_PHASE" in
    bench) bench bench --micro-batch "$BATCH" --zero-stage 0 1 --literal-zero-stage 1 ;;
    train) train_run ;;
    batch) best_batch ;;
    preempt) preempt_run ;;
  esac
  exit
fi

# --- environment -------------------------------------------------------------------------------------------
if ! "$PYTHON" -c "import deepspeed" 2>/dev/null; then
  log "deepspeed missing: installing the wheels in $WHEELS into $SCRATCH/site"
  "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --upgrade --target "$SCRATCH/site" "$WHEELS"/*.whl
  export PYTHONPATH="$SCRATCH/site:$ROOT${PYTHONPATH:+:$PYTHONPATH}"
else
  export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
fi
{
  date -u +%FT%TZ
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null || echo "no nvidia-smi"
  "$PYTHON" -c "import torch, deepspeed; print('torch', torch.__version__, 'deepspeed', deepspeed.__version__)"
} >"$OUT_DIR/environment.txt" 2>&1
# The gpt2 encoding needs a download (or a carried TIKTOKEN_CACHE_DIR); without it the trainer runs on bytes.
export SUITE_ENCODING=bytes
if timeout 20 "$PYTHON" -c "import tiktoken; tiktoken.get_encoding('gpt2')" >/dev/null 2>&1; then
  SUITE_ENCODING=gpt2
fi
echo "data.encoding=$SUITE_ENCODING" >>"$OUT_DIR/environment.txt"
archive

for name in $PHASES; do
  case "$name" in
    bench) phase bench 240 60 ;;
    train) phase train 200 60 ;;
    batch) phase batch 150 60 ;;
    preempt) phase preempt 200 80 ;;
    *) log "unknown phase $name (allowed: bench train batch preempt)" && exit 2 ;;
  esac
done
"$PYTHON" bench/gpu_suite_report.py "$OUT_DIR" >"$OUT_DIR/summary.md" 2>>"$LOG" || log "report failed"
archive
log "done: $OUT_DIR/summary.md, $OUT_DIR/results.tar.gz"
