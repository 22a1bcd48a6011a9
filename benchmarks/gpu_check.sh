#!/usr/bin/env bash
# The one prepared GPU check (issue 13), for a session whose device `status` says a machine is lent. Run it through
# the device tool from the repository root, carrying local/gpu_carry (benchmarks/gpu_check_prepare.sh fills it):
#
#   run(command="bash benchmarks/gpu_check.sh", carry=["local/gpu_carry"], timeout_s=540)
#
# Rehearse it here first, on the CPU, in about a minute (tests/test_gpu_check_script.py does this):
#
#   GPU_CHECK_SMOKE=1 OUT=/tmp/gpu_check_smoke bash benchmarks/gpu_check.sh
#
# The smoke mode runs every stage with the same commands and flags on the CPU presets (baseline-cpu, record-cpu),
# 2 steps and a tiny eval (bench-record's phased TTT included: `eval.mode` is set explicitly for that), so a wrong
# flag, `--set` field or Python error shows here and not on the GPU; only the official script (CUDA-only) is
# skipped there. What the smoke mode cannot show: compile, Triton, FA3/varlen, NCCL, bf16 autocast (CPU paths).
#
# On the GPU it finishes in at most ~7.5 minutes on one H100/H200: the stage timeouts add up to 440 s, plus a few
# seconds for env.txt and the synthetic shards. Each stage has its own timeout and a failed stage does not stop the
# others. Everything is written under $OUT:
#   env.txt                    GPU, driver, python, torch, triton and pip list (the machine is offline: nothing is
#                              installed; pgolf runs from src/ via PYTHONPATH)
#   pytest-gpu.txt             the `gpu`-marked tests
#   bench-baseline.json/.md    `pgolf bench --preset baseline` (real shapes, synthetic tokens, short)
#   bench-record.json/.md      `pgolf bench --preset record` (flat and phased-TTT eval tokens/s included); the
#                              training figures are printed to bench-record.txt before the eval starts
#   official-baseline.txt      the official baseline train_gpt.py for the same number of steps on synthetic
#                              sp1024 shards, for a side-by-side tokens/s (its step_avg lines)
#   profile-record.txt         torch.profiler's top operators of a few record steps
#   summary.txt                one line per stage: ok / failed (exit code; 124 = its timeout) / skipped, and seconds
set -uo pipefail
OUT=${OUT:-/tmp/gpu_check_out}
mkdir -p "$OUT"
: > "$OUT/summary.txt"
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
CARRY=local/gpu_carry
SMOKE=${GPU_CHECK_SMOKE:-0}

if [ "$SMOKE" = 1 ]; then  # same stages, CPU-sized
  DEVICE=cpu
  BASELINE=baseline-cpu RECORD=record-cpu STEPS=${STEPS:-2} WARMUP=1
  BASE_EVAL=4096 RECORD_EVAL=4096 PROFILE_BATCH=2 PROFILE_SEQ=256 SHARD_TOKENS=200000
else
  DEVICE=cuda
  BASELINE=baseline RECORD=record STEPS=${STEPS:-20} WARMUP=5
  BASE_EVAL=524288 RECORD_EVAL=262144 PROFILE_BATCH=32 PROFILE_SEQ=2048 SHARD_TOKENS=20000000
fi

stage() {  # stage NAME SECONDS COMMAND...: run with a timeout, log output, record the outcome
  local name=$1 limit=$2; shift 2
  local t0=$SECONDS
  timeout "$limit" "$@" > "$OUT/$name.txt" 2>&1
  local rc=$?
  echo "$name: $([ $rc -eq 0 ] && echo ok || echo "failed ($rc)") $((SECONDS - t0))s" | tee -a "$OUT/summary.txt"
}

{
  nvidia-smi || echo "nvidia-smi: not available"
  python -VV
  python -c "import torch; print('torch', torch.__version__, torch.version.cuda,
           torch.cuda.get_device_name() if torch.cuda.is_available() else 'no CUDA device')"
  python -c "import triton; print('triton', triton.__version__)"
  python -c "import flash_attn_interface; print('flash_attn_interface (FA3) importable')"
  python -c "from pgolf.model import attention as a, kernels as k; import torch
print('pgolf paths: FA3', a.fa3_varlen is not None, 'FA3 custom ops (compilable)', a.fa3_traceable,
      'torch varlen_attn', a.varlen_attention is not None, 'Triton kernels (auto)', k.wanted('auto', torch.device('cuda')))"
  python -m pip list
} > "$OUT/env.txt" 2>&1

stage pytest-gpu 120 python -m pytest -q -m gpu tests -p no:cacheprovider
stage bench-baseline 60 python -m pgolf bench --preset "$BASELINE" --device "$DEVICE" --steps "$STEPS" \
  --warmup "$WARMUP" --eval-tokens "$BASE_EVAL" --no-ttt \
  --json "$OUT/bench-baseline.json" --markdown "$OUT/bench-baseline.md"
stage bench-record 110 python -m pgolf bench --preset "$RECORD" --device "$DEVICE" --steps "$STEPS" \
  --warmup "$WARMUP" --eval-tokens "$RECORD_EVAL" --set eval.mode=phased-ttt --set eval.ttt_prefix_docs=200 \
  --json "$OUT/bench-record.json" --markdown "$OUT/bench-record.md"

# The official baseline on synthetic sp1024 shards in the official format, same step count.
DATA=$(mktemp -d "${TMPDIR:-/tmp}/gpu_check_data.XXXXXX")  # not under $OUT: nothing to send back
python - "$DATA" "$SHARD_TOKENS" <<'PY'
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
echo "synthetic-shards: $([ -f "$DATA/fineweb_val_000000.bin" ] && echo ok || echo failed)" | tee -a "$OUT/summary.txt"
if [ ! -f "$CARRY/official/train_gpt.py" ] || [ ! -f "$CARRY/fineweb_1024_bpe.model" ]; then
  echo "official-baseline: skipped (run benchmarks/gpu_check_prepare.sh and carry $CARRY)" | tee -a "$OUT/summary.txt"
elif [ "$SMOKE" = 1 ]; then
  echo "official-baseline: skipped (smoke: the official script needs CUDA; its inputs are present)" \
    | tee -a "$OUT/summary.txt"
else
  stage official-baseline 100 env DATA_PATH="$DATA" TOKENIZER_PATH="$CARRY/fineweb_1024_bpe.model" \
    ITERATIONS="$STEPS" WARMUP_STEPS=5 VAL_LOSS_EVERY=0 TRAIN_LOG_EVERY=1 MAX_WALLCLOCK_SECONDS=0 RUN_ID=gpu_check \
    python "$CARRY/official/train_gpt.py"
fi
rm -rf "$DATA"

# A few record steps as the trainer runs them (bf16 body, Triton kernels, autocast), profiled.
stage profile-record 50 python - "$RECORD" "$PROFILE_BATCH" "$PROFILE_SEQ" <<'PY'
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
model.looping = cfg.model.num_loops > 0
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
cat "$OUT/summary.txt"
