#!/usr/bin/env bash
# Issue 20: the 1.0611 record's own train_gpt.py (PR #1855) on ONE GPU, for a tokens/s comparison with
# `pgolf bench --preset record` on the same machine and the same attention kernels (torch's varlen_attn; the GPU
# image has no FlashAttention-3). Run from anywhere, after (here, then carry local/gpu_carry to the GPU machine):
#
#   python benchmarks/record_script.py prepare --mirror /work/.mirror/openai+parameter-golf/repo \
#       --out local/gpu_carry/record
#   # on the GPU machine (numpy + pgolf from src/; a few seconds):
#   PYTHONPATH=src python benchmarks/record_script.py shards --out /tmp/record_data \
#       --tokenizer local/gpu_carry/record/fineweb_8192_bpe_lossless_caps_caseops_v1_reserved.model
#   bash benchmarks/record_script_run.sh /tmp/record_data 30
#
# What one step is on one GPU. The record's global batch is TRAIN_BATCH_TOKENS = 786,432 tokens per optimizer step
# and grad_accum_steps = 8 // WORLD_SIZE: on 8 GPUs each rank runs one micro-batch per step; here (plain python, no
# RANK/WORLD_SIZE: world size 1, not distributed) the one GPU runs all 8 micro-batches, each one packed row of
# 786,432 / 8 = 98,304 tokens (attention cut at every BOS and every 2,048 tokens), then one optimizer step (Muon +
# Adam, clip, EMA update). So one record "step" here = 786,432 tokens = 8 x pgolf's micro-batch. `pgolf bench`
# times one step of ONE micro-batch (train.micro_batch_tokens = 98,304) with a full optimizer step each time, so:
# compare tokens/s (the record's `tok/s:` = steps x 786,432 / train time since the first timed step), or the
# record's interval_step_ms / 8 against bench's ms_per_step, remembering that the record pays its optimizer step
# once per 8 micro-batches and bench once per micro-batch. On 8xH100 the record ran ~121.7 ms/step (~6.5M tok/s).
#
# The log: every step (TRAIN_LOG_EVERY=1) `N/STEPS train_loss: ... tok/s: T step_avg: A ms interval_step_ms: I`;
# A is cumulative, I is per step since the previous line (the last lines are the steady state). The times are read
# before the line's train_loss.item() sync, so each includes the previous step's GPU tail (exact over many steps);
# logging every step also puts one host sync per step (set TRAIN_LOG_EVERY=10 to avoid most of it).
#
# Environment set here (the record's names; the README's submission values where they shape training):
#   fixed:       DATA_PATH=DATA_DIR, ITERATIONS=STEPS, MAX_WALLCLOCK_SECONDS=0 (no wallclock cap; LR schedule by
#                step), VAL_LOSS_EVERY=0, PGOLF_TRAIN_ONLY=1 (exit after the training loop: no final validation,
#                EMA swap, GPTQ, serialization, eval or TTT), PYTHONUNBUFFERED=1, CASEOPS_ENABLED=1 (loads the val
#                byte sidecar), VOCAB_SIZE=8192, TRAIN_BATCH_TOKENS=786432, TRAIN_SEQ_LEN=2048, RANK/WORLD_SIZE/
#                LOCAL_RANK unset, and the README's 1.0611 command's settings (MATRIX_LR, MIN_LR, WARMDOWN_FRAC, BETA2,
#                gates, LQER, FUSED_CE_ENABLED=1, ...).
#   overridable: WARMUP_STEPS=3 (the record: 20; the warmup compiles, then restores the initial weights),
#                TRAIN_LOG_EVERY=1, ENABLE_LOOPING_AT=0 (layers 3-5 looped from step 0, the shape `pgolf bench`
#                times and most of a record run uses; 0.35 = the record's schedule), SEED=42,
#                PGOLF_WARMUP_CU_BUCKETS (default: DATA_DIR/cu_buckets_1gpu.txt from `shards`: compile only the
#                cu_seqlens lengths this data meets, not the record's 64,128,192,256), TOKENIZER_PATH (default: the
#                .model in the record folder), ARTIFACT_DIR (the record's log and nothing else here; default
#                $OUT/record_run on the device machine, else local/record_run), RUN_ID, PYTHON (python3),
#                PGOLF_RECORD_DIR (local/gpu_carry/record).
set -uo pipefail

die() { echo "record_script_run.sh: $*" >&2; exit 2; }

[ $# -eq 2 ] || die "usage: benchmarks/record_script_run.sh DATA_DIR STEPS"
data=$1 steps=$2
[[ "$steps" =~ ^[0-9]+$ ]] && [ "$steps" -gt 0 ] || die "STEPS must be a positive integer (got '$steps')"
[ -d "$data" ] || die "$data: data directory does not exist"
compgen -G "$data/fineweb_train_*.bin" > /dev/null || die "$data: no fineweb_train_*.bin (run record_script.py shards)"
data=$(cd "$data" && pwd)

root=$(cd "$(dirname "$0")/.." && pwd)
record=${PGOLF_RECORD_DIR:-$root/local/gpu_carry/record}
[ -f "$record/train_gpt.py" ] || die "$record/train_gpt.py is missing (run benchmarks/record_script.py prepare)"
tokenizer=${TOKENIZER_PATH:-$(compgen -G "$record/*.model" | head -n 1)}
[ -n "$tokenizer" ] && [ -f "$tokenizer" ] || die "no tokenizer .model in $record (or TOKENIZER_PATH)"
buckets=${PGOLF_WARMUP_CU_BUCKETS-$(tr -d ' \n' < "$data/cu_buckets_1gpu.txt" 2>/dev/null)}
artifacts=${ARTIFACT_DIR:-${OUT:-$root/local}/record_run}

unset RANK WORLD_SIZE LOCAL_RANK LOCAL_WORLD_SIZE MASTER_ADDR MASTER_PORT
export PYTHONUNBUFFERED=1 PGOLF_TRAIN_ONLY=1 PGOLF_WARMUP_CU_BUCKETS="$buckets"
export DATA_PATH="$data" TOKENIZER_PATH="$tokenizer" ARTIFACT_DIR="$artifacts" RUN_ID=${RUN_ID:-record_script_run}
export ITERATIONS="$steps" MAX_WALLCLOCK_SECONDS=0 VAL_LOSS_EVERY=0 TRAIN_LOG_EVERY=${TRAIN_LOG_EVERY:-1}
export WARMUP_STEPS=${WARMUP_STEPS:-3} ENABLE_LOOPING_AT=${ENABLE_LOOPING_AT:-0} SEED=${SEED:-42}
export CASEOPS_ENABLED=1 VOCAB_SIZE=8192 TRAIN_BATCH_TOKENS=786432 TRAIN_SEQ_LEN=2048
# The README's 1.0611 command (training-relevant ones first; the quantization/TTT ones are unused with
# PGOLF_TRAIN_ONLY=1 and kept only so the printed hyperparameters match the submission's).
export MATRIX_LR=0.026 MIN_LR=0.1 GRAD_CLIP_NORM=0.3 MUON_BACKEND_STEPS=5 WARMDOWN_FRAC=0.85 BETA2=0.99 \
  SPARSE_ATTN_GATE_ENABLED=1 SPARSE_ATTN_GATE_SCALE=0.5 GATE_WINDOW=12 SMEAR_GATE_ENABLED=1 FUSED_CE_ENABLED=1
export EMBED_BITS=7 MLP_CLIP_SIGMAS=11.5 ATTN_CLIP_SIGMAS=13.0 EMBED_CLIP_SIGMAS=14.0 GATED_ATTN_QUANT_GATE=1 \
  LQER_ENABLED=1 LQER_ASYM_ENABLED=1 LQER_RANK=4 LQER_FACTOR_BITS=4 LQER_ASYM_GROUP=64 LQER_TOP_K=3 \
  GPTQ_RESERVE_SECONDS=0.5 GPTQ_CALIBRATION_BATCHES=16 COMPRESSOR=pergroup \
  PHASED_TTT_ENABLED=1 PHASED_TTT_PREFIX_DOCS=2500 PHASED_TTT_NUM_PHASES=3 TTT_CHUNK_SIZE=48 \
  GLOBAL_TTT_MOMENTUM=0.9 TTT_BETA2=0.99 TTT_WEIGHT_DECAY=0.5 TTT_LORA_RANK=80

echo "record_script_run.sh: $ITERATIONS steps of 786,432 tokens (8 micro-batches of 98,304) on one GPU;" \
  "data $DATA_PATH; warmup $WARMUP_STEPS steps; cu buckets ${PGOLF_WARMUP_CU_BUCKETS:-64,128,192,256 (record)};" \
  "looping from frac $ENABLE_LOOPING_AT; log $ARTIFACT_DIR/$RUN_ID.txt"
exec "${PYTHON:-python3}" -u "$record/train_gpt.py"
