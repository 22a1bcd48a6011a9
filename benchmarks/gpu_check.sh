#!/usr/bin/env bash
# The one prepared GPU check (issue 13), for a session whose device `status` says a machine is lent. Run it through
# the device tool from the repository root, carrying local/gpu_carry (benchmarks/gpu_check_prepare.sh fills it):
#
#   run(command="bash benchmarks/gpu_check.sh", carry=["local/gpu_carry"], timeout_s=540)
#
# It finishes in at most ~8 minutes on one H100/H200 (each stage has its own timeout and a failed stage does not stop
# the others) and writes everything under $OUT:
#   env.txt                    GPU, driver, python, torch, triton and pip list (the machine is offline: nothing is
#                              installed; pgolf runs from src/ via PYTHONPATH)
#   pytest-gpu.txt             the `gpu`-marked tests
#   bench-baseline.json/.md    `pgolf bench --preset baseline` (real shapes, synthetic tokens, short)
#   bench-record.json/.md      `pgolf bench --preset record` (flat and phased-TTT eval tokens/s included)
#   official-baseline.txt      the official baseline train_gpt.py for the same number of steps on synthetic
#                              sp1024 shards, for a side-by-side tokens/s (its step_avg lines)
#   profile-record.txt         torch.profiler's top operators of a few record steps
#   summary.txt                one line per stage: ok / failed (exit code) and seconds
set -uo pipefail
OUT=${OUT:-/tmp/gpu_check_out}
mkdir -p "$OUT"
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
CARRY=local/gpu_carry
STEPS=${STEPS:-20}

stage() {  # stage NAME SECONDS COMMAND...: run with a timeout, log output, record the outcome
  local name=$1 limit=$2; shift 2
  local t0=$SECONDS
  timeout "$limit" "$@" > "$OUT/$name.txt" 2>&1
  local rc=$?
  echo "$name: $([ $rc -eq 0 ] && echo ok || echo "failed ($rc)") $((SECONDS - t0))s" | tee -a "$OUT/summary.txt"
}

{
  nvidia-smi; python -VV
  python -c "import torch; print('torch', torch.__version__, torch.version.cuda, torch.cuda.get_device_name())"
  python -c "import triton; print('triton', triton.__version__)"
  python -c "import flash_attn_interface; print('flash_attn_interface (FA3) importable')"
  python -m pip list
} > "$OUT/env.txt" 2>&1

stage pytest-gpu 150 python -m pytest -q -m gpu tests -p no:cacheprovider
stage bench-baseline 90 python -m pgolf bench --preset baseline --steps "$STEPS" --warmup 5 --eval-tokens 524288 \
  --json "$OUT/bench-baseline.json" --markdown "$OUT/bench-baseline.md"
stage bench-record 150 python -m pgolf bench --preset record --steps "$STEPS" --warmup 5 --eval-tokens 262144 \
  --set eval.ttt_prefix_docs=200 --json "$OUT/bench-record.json" --markdown "$OUT/bench-record.md"

# The official baseline on synthetic sp1024 shards in the official format, same step count.
DATA=/tmp/gpu_check_data
python - "$DATA" <<'PY'
import sys
from pathlib import Path
import numpy as np
from pgolf.data.shards import write_shard
out = Path(sys.argv[1]); out.mkdir(parents=True, exist_ok=True)
rng = np.random.default_rng(0)
write_shard(out / "fineweb_train_000000.bin", rng.integers(0, 1024, 20_000_000).astype(np.uint16))
write_shard(out / "fineweb_val_000000.bin", rng.integers(0, 1024, 2_000_000).astype(np.uint16))
PY
if [ -f "$CARRY/official/train_gpt.py" ]; then
  stage official-baseline 150 env DATA_PATH="$DATA" TOKENIZER_PATH="$CARRY/fineweb_1024_bpe.model" \
    ITERATIONS="$STEPS" WARMUP_STEPS=5 VAL_LOSS_EVERY=0 TRAIN_LOG_EVERY=1 MAX_WALLCLOCK_SECONDS=0 RUN_ID=gpu_check \
    python "$CARRY/official/train_gpt.py"
else
  echo "official-baseline: skipped (run benchmarks/gpu_check_prepare.sh and carry $CARRY)" | tee -a "$OUT/summary.txt"
fi

stage profile-record 90 python - <<'PY'
import torch
from torch.profiler import ProfilerActivity, profile
from pgolf.model.gpt import GPT
from pgolf.options import resolve_config
from pgolf.runtime import autocast_for
cfg = resolve_config("record", ["train.micro_batch_tokens=65536"])
model = GPT(cfg.model).cuda()
model.looping = True
x = torch.randint(0, cfg.model.vocab_size, (32, 2048), device="cuda")
for i in range(4):
    if i == 2:
        prof = profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]); prof.__enter__()
    with autocast_for(torch.device("cuda")):
        model(x, x).backward()
torch.cuda.synchronize(); prof.__exit__(None, None, None)
print(prof.key_averages().table(sort_by="cuda_time_total", row_limit=25))
PY
cat "$OUT/summary.txt"
