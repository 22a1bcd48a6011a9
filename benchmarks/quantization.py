"""Quantization schemes on one trained model: post-roundtrip val_bpb and bytes (issue 4's table).

    python benchmarks/quantization.py RUN_DIR --data DIR [--codec lzma] [--passthrough 4096] [--out FILE.md]

RUN_DIR must hold `model_fp32.pt` (train with `--set train.save_float=true`) and `config.json`. Every variant goes
the real way: quantize -> write an artifact file -> `score_artifact` reads it back and scores the full val split.
Hessians for GPTQ come from training batches (the loader's first `--calib-batches` micro-batches) or from
`--self-seqs` sequences of `--self-len` tokens the model samples itself.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

from pgolf.artifact.format import encode_artifact, save_artifact
from pgolf.bundle.code_bytes import count_code_bytes
from pgolf.config import Config
from pgolf.data.loader import DistributedTokenLoader
from pgolf.eval.evaluate import ValidationData, score_artifact
from pgolf.model.gpt import GPT
from pgolf.quant.fitter import fit_budget
from pgolf.quant.gptq import HessianCollector, generate_calibration
from pgolf.quant.recipe import quantize_for_export

VARIANTS = [
    # name, quant overrides, calibration source
    ("int8 + zlib (baseline)", {"scheme": "int8", "codec": "zlib"}, None),
    ("int6 round-to-nearest (percentile clip)", {"clip": "percentile"}, None),
    ("int6 GPTQ-lite (per-row clip search)", {"clip": "search"}, None),
    ("int6 percentile clip + full GPTQ (train calibration)", {"clip": "percentile", "gptq": True}, "train"),
    ("int6 percentile clip + full GPTQ (self-generated calibration)", {"clip": "percentile", "gptq": True}, "self"),
    ("int6 SDClip k=12.85", {"clip": "sdclip"}, None),
    ("int6 SDClip + full GPTQ (train calibration)", {"clip": "sdclip", "gptq": True}, "train"),
    ("int6 SDClip + full GPTQ (self-generated calibration)", {"clip": "sdclip", "gptq": True}, "self"),
    ("int6 SDClip + GPTQ (train) + LQER top-3 rank 4", {"clip": "sdclip", "gptq": True, "lqer_top": 3}, "train"),
    ("int5 SDClip k=12.85 + GPTQ (train)", {"clip": "sdclip", "gptq": True, "bits": "embed=8,default=5"}, "train"),
    ("ternary matrices (absmean), int8 embedding", {"clip": "absmean", "bits": "embed=8,default=2"}, None),
    ("budget fitter (--fit-bytes), SDClip + GPTQ (train), ans", {"fit": True, "gptq": True, "codec": "ans",
                                                                  "level": 11}, "train"),
]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run_dir", type=Path)
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--codec", default="lzma")
    ap.add_argument("--passthrough", type=int, default=4096, help="quant.passthrough_numel for the mixed variants")
    ap.add_argument("--calib-batches", type=int, default=16)
    ap.add_argument("--self-seqs", type=int, default=16)
    ap.add_argument("--self-len", type=int, default=256)
    ap.add_argument("--only", default="", help="comma-separated variant indices to run")
    ap.add_argument("--fit-bytes", type=int, default=450_000, help="artifact budget of the fitter variant")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args(argv)
    torch.set_num_threads(2)

    cfg = Config.from_dict(json.loads((args.run_dir / "config.json").read_text()))
    state = torch.load(args.run_dir / "model_fp32.pt", weights_only=True)
    model = GPT(cfg.model)
    model.load_state_dict(state)
    model.set_looping(cfg.model.num_loops > 0)
    model.eval()
    val = ValidationData(args.data, cfg.model.vocab_size)
    t0 = time.perf_counter()
    float_res = val.score(model, seq_len=cfg.train.train_seq_len, batch_tokens=cfg.eval.batch_tokens,
                          device=torch.device("cpu"))
    print(f"float (no quantization): val_bpb {float_res.val_bpb:.6f} ({time.perf_counter() - t0:.1f}s)", flush=True)

    hessians: dict[str, dict] = {}
    t0 = time.perf_counter()
    loader = DistributedTokenLoader(args.data, "train", vocab_size=cfg.model.vocab_size)
    with HessianCollector(model) as hc:
        for _ in range(args.calib_batches):
            x = loader.next_batch(cfg.train.micro_batch_tokens, cfg.train.train_seq_len, 1).x
            hc.collect(x)
    hessians["train"] = hc.hessians
    print(f"train Hessians: {hc.tokens_seen} tokens, {time.perf_counter() - t0:.1f}s", flush=True)
    t0 = time.perf_counter()
    seqs = generate_calibration(model, num_seqs=args.self_seqs, seq_len=args.self_len, seed=0)
    with HessianCollector(model) as hc:
        hc.collect(seqs)
    hessians["self"] = hc.hessians
    print(f"self-generated Hessians: {hc.tokens_seen} tokens, {time.perf_counter() - t0:.1f}s", flush=True)

    code, _ = count_code_bytes(cfg.preset)
    rows = []
    only = {int(i) for i in args.only.split(",") if i.strip()}
    with tempfile.TemporaryDirectory() as tmp:
        for i, (name, overrides, calib) in enumerate(VARIANTS):
            if only and i not in only:
                continue
            q = copy.deepcopy(cfg.quant)
            q.scheme, q.codec, q.passthrough_numel = "mixed", args.codec, args.passthrough
            for k, v in overrides.items():
                setattr(q, k, v)
            run_cfg = copy.deepcopy(cfg)
            run_cfg.quant = q
            t0 = time.perf_counter()
            if q.fit:
                def size(m, q=q, run_cfg=run_cfg):
                    return len(encode_artifact(m, config=run_cfg.to_dict(), tokenizer=dict(val.manifest["tokenizer"]),
                                               codec=q.codec, level=q.level, meta={"code_bytes": code}))
                qm, fit = fit_budget(state, q, budget_bytes=args.fit_bytes, encoded_size=size,
                                     hessians=hessians.get(calib) if calib else None)
                name = f"{name}: budget {args.fit_bytes:,}, plan {fit.plan}, predicted {fit.predicted_bytes:,}"
                print(f"fit: {fit.to_dict()}", flush=True)
            else:
                qm, _ = quantize_for_export(state, q, hessians=hessians.get(calib) if calib else None)
            quant_s = time.perf_counter() - t0
            path = Path(tmp) / f"v{i}.pgolf"
            size = save_artifact(path, qm, config=run_cfg.to_dict(), tokenizer=dict(val.manifest["tokenizer"]),
                                 codec=q.codec, level=q.level, meta={"code_bytes": code})
            scored = score_artifact(path, args.data, code_bytes=code)
            rows.append((name, q.codec, scored["val_bpb"], scored["val_bpb"] - float_res.val_bpb, size,
                         size + code, quant_s))
            print(f"{name}: val_bpb {scored['val_bpb']:.6f} bytes {size:,} ({quant_s:.1f}s quantization)",
                  flush=True)
    lines = [f"float weights (no quantization): val_bpb {float_res.val_bpb:.6f}", "",
             "| variant | codec | val_bpb | vs float | artifact bytes | total bytes | quantize s |",
             "|---|---|---:|---:|---:|---:|---:|"]
    lines += [f"| {n} | {c} | {b:.6f} | {d:+.6f} | {s:,} | {t:,} | {qs:.1f} |" for n, c, b, d, s, t, qs in rows]
    text = "\n".join(lines)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
