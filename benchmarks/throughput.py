"""Training throughput of a preset: tokens/s of full optimizer steps (forward, backward, Muon + Adam), on synthetic
tokens, on whatever device is available (or `--device`); one JSON line. Used for docs/BENCHMARKS.md:

    python benchmarks/throughput.py --preset cpu-smoke
    python benchmarks/throughput.py --preset baseline --micro-batch-tokens 8192 --steps 5
    python benchmarks/throughput.py --preset baseline --device cuda          # one H100, official micro-batch
    python benchmarks/throughput.py --preset record-cpu --packed-doc-len 600 # packed row, attention cut at BOS

The measurement is `pgolf bench`'s training part (`pgolf.train.bench.bench_training`: compiled on CUDA, bf16
autocast); `pgolf bench` adds FLOPs/MFU, memory and eval throughput.
"""

from __future__ import annotations

import argparse
import json

import torch

from pgolf.options import resolve_config
from pgolf.train.bench import bench_training, device_name


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="cpu-smoke")
    ap.add_argument("--micro-batch-tokens", type=int, default=0, help="default: the preset's micro_batch_tokens")
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--set", action="append", default=[])
    ap.add_argument("--packed-doc-len", type=int, default=0,
                    help="train.loader=packed's layout: one packed row, a BOS on average every N tokens")
    args = ap.parse_args()
    sets = list(args.set)
    if args.micro_batch_tokens:
        sets.append(f"train.micro_batch_tokens={args.micro_batch_tokens}")
    if args.packed_doc_len:
        sets.append("train.loader=packed")
    cfg = resolve_config(args.preset, sets)
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                          ("cpu" if args.device == "auto" else args.device))
    out = bench_training(cfg, device, args.steps, args.warmup, mean_doc=args.packed_doc_len)
    print(json.dumps({"preset": args.preset, "device": device_name(device), "threads": torch.get_num_threads(),
                      "packed_doc_len": args.packed_doc_len, **out, "torch": torch.__version__}))


if __name__ == "__main__":
    main()
