#!/usr/bin/env bash
# The record, scaled down, end to end on CPU (issue 12): CaseOps SP8192 data from ../shared, `pgolf train --preset
# record` with every technique of the record's shape kept and only sizes scaled, the record's export (GPTQ int6/int7
# + LQER, ans2), then the trainer's report: flat, sliding (stride 64) and, final, phased TTT of the artifact file.
#
# What it does, from the repository root:
#   1. snapshots the committed tree (`git archive HEAD src`) into $OUT/snap and runs pgolf from there
#      (PYTHONPATH), so edits to the working tree during the run cannot change it; the commit goes in $OUT/commit.txt;
#   2. builds CaseOps data with the record's tokenizer (fineweb_8192_bpe_lossless_caps_caseops_v1_reserved.model):
#      val = the first $VAL_DOCS documents of challenge_docs_200.jsonl (with the byte sidecar), train = the rest of
#      that file plus fineweb_10BT_legal_2800.jsonl (about 6.7M tokens);
#   3. trains the record preset scaled down (below) for $TRAIN_SECONDS of wall clock on CPU, calibrates GPTQ on
#      training batches inside that clock, exports, and scores the artifact with flat, sliding and phased TTT;
#   4. leaves config.json, log.txt, metrics.jsonl, result.json and artifact.pgolf in $OUT/run and prints the
#      report lines of log.txt and the phase times of result.json.
#
# Scaled down from the record (11 x 512, 786,432 tokens x 2048 per step, 600 s on 8xH100, 50,000 val documents):
#   6 x 128 (heads 4/2, MLP 4x LeakyReLU^2), layers 2-3 looped twice from 35% of training, two-lane parallel
#   residuals from layer 4, XSA on all 6 layers, SmearGate, SparseAttnGate, partial RoPE 16, skip gates, packed
#   loader with document-isolated attention; 4,096 tokens x 256 per step; EMA decay 0.8 (the record's 0.9965 averages
#   over ~290 of its ~4,900 steps, i.e. longer than this whole run); Muon momentum warm-up 20 steps; GPTQ on 4
#   training batches; phased TTT with LoRA rank 20 (alpha 36: the record's scale alpha/rank = 1.8), 8 documents per
#   batch, 2 warm-start chains, 3 global SGD phases over the first 24 documents in 2,048-token steps. Everything
#   else (learning rates, WD, warmdown 0.85, MIN_LR, SDClip k, LQER, TTT lr/betas/WD, chunk 48) is the record's.
#
# Time: 40 minutes on 2 shared CPU cores, measured 2026-12-02 (data 25 s, training + calibration 473 s,
# quantization + compression 23 s, flat 97 s, sliding 192 s, phased TTT 1,578 s; docs/BENCHMARKS.md, "Scaled record
# on CPU"). TTT dominates: its first batch runs every row to the longest val document (18,873 tokens).
# torch runs with $THREADS thread(s): on the 2-core machine shared with other jobs, 1 thread was 2.7x faster per
# step than 2 (benchmarks/throughput.py --preset record-cpu).
#
# Usage: benchmarks/record_cpu.sh                 (env: OUT, VAL_DOCS, TRAIN_SECONDS, THREADS, SNAPSHOT=0 to run
#                                                  the working tree's pgolf instead of a snapshot of HEAD)
set -euo pipefail

OUT=${OUT:-local/record-cpu}
VAL_DOCS=${VAL_DOCS:-32}
TRAIN_SECONDS=${TRAIN_SECONDS:-480}
THREADS=${THREADS:-1}
SNAPSHOT=${SNAPSHOT:-1}
SHARED=${SHARED:-../shared/data}
TOK=$SHARED/tokenizers/fineweb_8192_bpe_lossless_caps_caseops_v1_reserved.model

mkdir -p "$OUT"
if [ "$SNAPSHOT" = 1 ]; then
  rm -rf "$OUT/snap" && mkdir -p "$OUT/snap"
  git archive HEAD src | tar -x -C "$OUT/snap"
  git rev-parse HEAD > "$OUT/commit.txt"
  export PYTHONPATH="$PWD/$OUT/snap/src${PYTHONPATH:+:$PYTHONPATH}"
  echo "pgolf from a snapshot of commit $(cat "$OUT/commit.txt")"
fi
export OMP_NUM_THREADS=$THREADS MKL_NUM_THREADS=$THREADS
python -c 'import pgolf, sys; print("pgolf:", pgolf.__file__)'

# 1. CaseOps SP8192 data (val = the first VAL_DOCS challenge documents)
rm -rf "$OUT/data"
t0=$(date +%s.%N)
python -m pgolf data build --docs "$SHARED/fineweb/challenge_docs_200.jsonl" \
  --docs "$SHARED/fineweb/fineweb_10BT_legal_2800.jsonl" --tokenizer "$TOK" --caseops --val-docs "$VAL_DOCS" \
  --workers 2 --out "$OUT/data" --quiet
echo "data_build: $(python -c "print(round($(date +%s.%N) - $t0, 1))") s"

# 2. The record preset, scaled down (sizes only; the technique set is the record's)
rm -rf "$OUT/run"
python -m pgolf train --preset record --data "$OUT/data" --run-dir "$OUT/run" --max-seconds "$TRAIN_SECONDS" \
  --set train.device=cpu --set train.compile=off --set eval.compile=off --set train.threads="$THREADS" \
  --set model.num_layers=6 --set model.model_dim=128 --set model.num_heads=4 --set model.num_kv_heads=2 \
  --set model.loop_start=2 --set model.loop_end=3 --set model.parallel_start=4 --set model.xsa_last_n=6 \
  --set train.loader=packed --set train.train_seq_len=256 \
  --set train.train_batch_tokens=4096 --set train.micro_batch_tokens=4096 \
  --set train.warmup_steps=0 --set train.val_loss_every=0 --set train.train_log_every=10 \
  --set train.val_batch_tokens=65536 --set optim.muon_momentum_warmup_steps=20 --set optim.ema_decay=0.8 \
  --set quant.calib_batches=4 --set quant.gptq_reserve_seconds=20 --set quant.passthrough_numel=4096 \
  --set eval.mode=phased-ttt --set eval.report_modes=flat,sliding --set eval.batch_tokens=65536 \
  --set ttt.rank=20 --set ttt.alpha=36 --set ttt.batch_docs=8 --set ttt.chains=2 \
  --set ttt.prefix_docs=24 --set ttt.chunk_tokens=2048

# 3. The report
echo "--- $OUT/run/log.txt (report lines)"
grep -E '^(stopping_early|gptq_calibration|budget_fit|Serialized|Total submission|quantized|ttpp|ttpr|ttt_phased|final_)' \
  "$OUT/run/log.txt" || true
python - "$OUT/run/result.json" <<'EOF'
import json, sys
r = json.load(open(sys.argv[1]))
print("final:", r["final_eval"], "val_bpb", r["val_bpb"], "| steps", r["steps"], "| total bytes", r["total_bytes"])
for e in r["evals"]:
    print(f"  {e['label']:<28} val_bpb {e['val_bpb']:.8f}  eval_time {e['eval_time_ms'] / 1000:8.1f} s")
print("phases (s):", ", ".join(f"{k} {v:.1f}" for k, v in r["phases"].items()))
EOF
