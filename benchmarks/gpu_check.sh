#!/usr/bin/env bash
# The one prepared GPU check (issues 13 and 20), for a session whose device `status` says a machine is lent.
# Prepare here first (wheels of what the GPU image lacks, the official baseline, the FA3-patched 1.0611 record):
#
#   bash benchmarks/gpu_check_prepare.sh /work/.mirror/openai+parameter-golf/repo
#
# then run it through the device tool from the repository root, carrying what the preparation made:
#
#   run(command="bash benchmarks/gpu_check.sh", carry=["local/gpu_carry"], timeout_s=540)
#
# Rehearse it here, on the CPU: `GPU_CHECK_SMOKE=1 OUT=/tmp/smoke bash benchmarks/gpu_check.sh` with any Python
# (tests/test_gpu_check_script.py), and with the GPU image's own versions (torch 2.11, triton 3.6, Python 3.12, the
# packages it lacks blocked): `bash benchmarks/gpu_rehearsal.sh`.
#
# The key numbers come first, so that a cold compile that eats the time still brings them back. The script keeps
# its own clock: stages run in order while GPU_CHECK_BUDGET seconds (default 525, under the call's 540) last; each
# stage's limit is cut to what is left, and a stage with under 20 s left is skipped and says so. Limits, on one
# H100/H200 (the reasoning for each is in docs/BENCHMARKS.md#gpu-check-budget):
#   key:    bench-record-train 170, bench-baseline-train 75, official-baseline 80, record-script 150  (475 s)
#   after:  pytest-gpu 90, ngram-hints 45, bench-record-eval 120, bench-record-nokernels 120, profile-record 50
# Everything is written under $OUT:
#   summary.txt        one line per stage: ok / failed (exit code; 124 = its timeout) / skipped (why), and seconds
#   timeline.txt       when each stage started (UTC and seconds into the run) and the limit it got
#   env.txt            GPU, driver, python, torch, triton, the attention/kernel paths pgolf takes, pip list
#   <stage>.txt        each stage's output, its first line the start time; bench stages also write <stage>.json/.md
# The interpreter is ${PYTHON:-python3} (the GPU machine has no `python`); output is unbuffered.
set -uo pipefail
OUT=${OUT:-/tmp/gpu_check_out}
PY=${PYTHON:-python3}
BUDGET=${GPU_CHECK_BUDGET:-525}
CARRY=${GPU_CHECK_CARRY:-local/gpu_carry}
SMOKE=${GPU_CHECK_SMOKE:-0}
export PYTHONUNBUFFERED=1
mkdir -p "$OUT"
: > "$OUT/summary.txt"
: > "$OUT/timeline.txt"

if [ "$SMOKE" = 1 ]; then  # same stages, CPU-sized
  DEVICE=cpu
  BASELINE=baseline-cpu RECORD=record-cpu STEPS=${STEPS:-2} WARMUP=1
  BASE_EVAL=4096 RECORD_EVAL=4096 PROFILE_BATCH=2 PROFILE_SEQ=256 SHARD_TOKENS=200000 NGRAM_TOKENS=200000
else
  DEVICE=cuda
  BASELINE=baseline RECORD=record STEPS=${STEPS:-20} WARMUP=5
  BASE_EVAL=524288 RECORD_EVAL=262144 PROFILE_BATCH=32 PROFILE_SEQ=2048 SHARD_TOKENS=20000000
  NGRAM_TOKENS=47851520  # the CaseOps val stream's length (synthetic tokens: ../shared does not travel)
fi

note() {  # note NAME OUTCOME: one summary line
  echo "$1: $2" | tee -a "$OUT/summary.txt"
}

stage() {  # stage NAME SECONDS COMMAND...: run under min(SECONDS, what the budget has left); log and record it
  local name=$1 limit=$2; shift 2
  local left=$((BUDGET - SECONDS))
  if [ "$left" -lt 20 ]; then
    note "$name" "skipped (budget: ${left}s of ${BUDGET}s left)"
    return
  fi
  [ "$limit" -gt "$left" ] && limit=$left
  local t0=$SECONDS
  echo "$name: started $(date -u +%FT%TZ) at +${SECONDS}s, limit ${limit}s" >> "$OUT/timeline.txt"
  echo "# $name started $(date -u +%FT%TZ), limit ${limit}s: $*" > "$OUT/$name.txt"
  timeout --kill-after=10 "$limit" "$@" >> "$OUT/$name.txt" 2>&1
  local rc=$?
  note "$name" "$([ $rc -eq 0 ] && echo ok || echo "failed ($rc)") $((SECONDS - t0))s"
}

# What the image lacks, from the carried wheels, before anything imports pgolf (benchmarks/gpu_image.txt).
SITE=${GPU_CHECK_SITE:-$(mktemp -d "${TMPDIR:-/tmp}/gpu_check_site.XXXXXX")}
if ls "$CARRY"/wheels/*.whl > /dev/null 2>&1; then
  if "$PY" -m pip --version > /dev/null 2>&1; then
    "$PY" -m pip install --quiet --no-index --no-deps --target "$SITE" "$CARRY"/wheels/*.whl > "$OUT/wheels.txt" 2>&1
  else  # no pip in that interpreter: a wheel is a zip laid out for site-packages
    "$PY" -c 'import sys, zipfile; [zipfile.ZipFile(w).extractall(sys.argv[1]) for w in sys.argv[2:]]' \
      "$SITE" "$CARRY"/wheels/*.whl > "$OUT/wheels.txt" 2>&1
  fi
  rc=$?
  note wheels "$([ $rc -eq 0 ] && echo "ok ($(ls "$CARRY"/wheels/*.whl | wc -l) installed)" || echo "failed ($rc)")"
else
  note wheels "skipped (none carried: run benchmarks/gpu_check_prepare.sh and carry $CARRY)"
fi
export PYTHONPATH="$SITE:$PWD/src${PYTHONPATH:+:$PYTHONPATH}"

{
  date -u +%FT%TZ
  nvidia-smi || echo "nvidia-smi: not available"
  "$PY" -VV
  "$PY" -c "import torch; print('torch', torch.__version__, torch.version.cuda,
           torch.cuda.get_device_name() if torch.cuda.is_available() else 'no CUDA device')"
  "$PY" -c "import triton; print('triton', triton.__version__)"
  "$PY" -c "import flash_attn_interface; print('flash_attn_interface (FA3) importable')"
  "$PY" -c "from pgolf.model import attention as a, kernels as k; import torch
print('pgolf paths: FA3', a.fa3_varlen is not None, 'FA3 custom ops (compilable)', a.fa3_traceable,
      'torch varlen_attn', a.varlen_attention is not None, 'varlen keywords', sorted(a.varlen_keywords(True)),
      'Triton kernels (auto)', k.wanted('auto', torch.device('cuda')))"
  "$PY" -m pip list
} > "$OUT/env.txt" 2>&1

bench() {  # bench STAGE LIMIT PRESET ARGS...: `pgolf bench`, JSON and a markdown row under $OUT
  local name=$1 limit=$2 preset=$3; shift 3
  stage "$name" "$limit" "$PY" -m pgolf bench --preset "$preset" --device "$DEVICE" --steps "$STEPS" \
    --warmup "$WARMUP" --json "$OUT/$name.json" --markdown "$OUT/$name.md" "$@"
}

# Synthetic shards, not under $OUT (nothing to send back): official sp1024 for the official baseline, CaseOps-shaped
# SP8192 for the record's own script.
DATA=$(mktemp -d "${TMPDIR:-/tmp}/gpu_check_data.XXXXXX")
"$PY" - "$DATA/sp1024" "$SHARD_TOKENS" <<'PY'
import sys
from pathlib import Path
import numpy as np
from pgolf.data.shards import write_shard
out, n = Path(sys.argv[1]), int(sys.argv[2])
out.mkdir(parents=True, exist_ok=True)
rng = np.random.default_rng(0)
write_shard(out / "fineweb_train_000000.bin", rng.integers(0, 1024, n).astype(np.uint16))
write_shard(out / "fineweb_val_000000.bin", rng.integers(0, 1024, n // 10).astype(np.uint16))
PY
note synthetic-shards "$([ -f "$DATA/sp1024/fineweb_val_000000.bin" ] && echo ok || echo failed)"

# ---- key numbers: training tokens/s and peak memory of pgolf record and baseline, and the reference scripts ----
bench bench-record-train 170 "$RECORD" --eval-tokens 0
bench bench-baseline-train 75 "$BASELINE" --eval-tokens 0
if [ ! -f "$CARRY/official/train_gpt.py" ] || [ ! -f "$CARRY/fineweb_1024_bpe.model" ]; then
  note official-baseline "skipped (not prepared: run benchmarks/gpu_check_prepare.sh OFFICIAL_REPO and carry $CARRY)"
elif [ "$SMOKE" = 1 ]; then
  note official-baseline "skipped (smoke: the official script needs CUDA; its inputs are present)"
else
  stage official-baseline 80 env DATA_PATH="$DATA/sp1024" TOKENIZER_PATH="$CARRY/fineweb_1024_bpe.model" \
    ITERATIONS="$STEPS" WARMUP_STEPS=5 VAL_LOSS_EVERY=0 TRAIN_LOG_EVERY=1 MAX_WALLCLOCK_SECONDS=0 RUN_ID=gpu_check \
    "$PY" "$CARRY/official/train_gpt.py"
fi
if [ ! -f "$CARRY/record/train_gpt.py" ]; then
  note record-script "skipped (not prepared: run benchmarks/gpu_check_prepare.sh OFFICIAL_REPO and carry $CARRY)"
else
  "$PY" benchmarks/record_script.py shards --out "$DATA/record" --tokenizer "$CARRY"/record/*.model \
    --train-tokens "$SHARD_TOKENS" --val-tokens $((SHARD_TOKENS / 10)) > "$OUT/record-shards.txt" 2>&1
  rc=$?
  if [ $rc -ne 0 ]; then
    note record-script "failed (synthetic CaseOps shards: exit $rc, see record-shards.txt)"
  elif [ "$SMOKE" = 1 ]; then
    note record-script "skipped (smoke: the record's script needs CUDA; its shards were written)"
  else
    stage record-script 150 env PYTHON="$PY" bash benchmarks/record_script_run.sh "$DATA/record" "$STEPS"
  fi
fi

# ---- after them, each with its own limit: correctness on CUDA, eval and TTT throughput, kernels A/B, profile ----
stage pytest-gpu 90 "$PY" -m pytest -q -m gpu -p no:cacheprovider $(grep -rl "mark.gpu" tests --include="test_*.py")
# The n-gram tilt's hints over a val-sized stream on the device (issue 22: at most 15 s of the eval budget).
stage ngram-hints 45 "$PY" benchmarks/ngram_hints.py --device "$DEVICE" --tokens "$NGRAM_TOKENS" --repeat 2
bench bench-record-eval 120 "$RECORD" --no-train --eval-tokens "$RECORD_EVAL" --set eval.mode=phased-ttt \
  --set ttt.prefix_docs=200
bench bench-record-nokernels 120 "$RECORD" --eval-tokens 0 --set train.kernels=off
# A few record steps as the trainer runs them (bf16 body, Triton kernels, autocast), profiled.
stage profile-record 50 "$PY" - "$RECORD" "$PROFILE_BATCH" "$PROFILE_SEQ" <<'PY'
import sys
import torch
from torch.profiler import ProfilerActivity, profile
from pgolf.model.gpt import GPT
from pgolf.model.kernels import wanted
from pgolf.model.precision import body_dtype, cast_body
from pgolf.options import resolve_config
from pgolf.runtime import autocast_for
preset, batch, seq = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
cfg = resolve_config(preset, [])
model = GPT(cfg.model).to(device)
cast_body(model, body_dtype(cfg.train.body_dtype, device))
model.use_kernels(wanted(cfg.train.kernels, device))
model.set_looping(cfg.model.num_loops > 0)
x = torch.randint(0, cfg.model.vocab_size, (batch, seq), device=device)
activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
prof = profile(activities=activities)
for i in range(4):
    if i == 2:
        prof.__enter__()
    with autocast_for(device):
        model(x, x).backward()
if device.type == "cuda":
    torch.cuda.synchronize()
prof.__exit__(None, None, None)
print(prof.key_averages().table(sort_by="cuda_time_total" if device.type == "cuda" else "cpu_time_total",
                                row_limit=25))
PY
rm -rf "$DATA"
[ -z "${GPU_CHECK_SITE:-}" ] && rm -rf "$SITE"
echo "total: ${SECONDS}s of ${BUDGET}s" >> "$OUT/timeline.txt"
cat "$OUT/summary.txt"
