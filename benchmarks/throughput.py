"""Training throughput of a preset: tokens/s of full optimizer steps (forward, backward, Muon + Adam).

Runs `--steps` timed steps after `--warmup` untimed ones on random tokens at the preset's micro-batch, on whatever
device is available (or `--device`), and prints one JSON line. Used for docs/BENCHMARKS.md:

    python benchmarks/throughput.py --preset cpu-smoke
    python benchmarks/throughput.py --preset baseline --micro-batch-tokens 8192 --steps 5
    python benchmarks/throughput.py --preset baseline --device cuda          # one H100, official micro-batch
    python benchmarks/throughput.py --preset record-cpu --packed-doc-len 600 # packed row, attention cut at BOS

On CUDA the model is compiled and runs under bf16 autocast, as in training.
"""

from __future__ import annotations

import argparse
import json
import platform
import time

import torch

from pgolf.options import resolve_config
from pgolf.model.gpt import GPT
from pgolf.optim.groups import build_optimizers
from pgolf.runtime import autocast_for


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

    cfg = resolve_config(args.preset, args.set)
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                          ("cpu" if args.device == "auto" else args.device))
    tokens = args.micro_batch_tokens or cfg.train.micro_batch_tokens
    seq = cfg.train.train_seq_len
    torch.manual_seed(0)
    model = GPT(cfg.model).to(device)
    step_model = torch.compile(model, dynamic=False) if device.type == "cuda" else model
    opts = build_optimizers(model, cfg.optim)
    x = torch.randint(2, cfg.model.vocab_size, (tokens // seq, seq), device=device)
    y = torch.randint(0, cfg.model.vocab_size, (tokens // seq, seq), device=device)
    segments = None
    if args.packed_doc_len:
        from pgolf.data.segments import document_segments
        x, y = x.reshape(1, -1), y.reshape(1, -1)
        gen = torch.Generator().manual_seed(0)
        x[0, torch.rand(tokens, generator=gen).to(device) < 1 / args.packed_doc_len] = cfg.model.bos_id
        segments = document_segments(x, cfg.model.bos_id, seq).to(device)

    def step() -> None:
        for o in opts:
            o.zero_grad(set_to_none=True)
        with autocast_for(device):
            loss = step_model(x, y, segments=segments)
        loss.backward()
        for o in opts:
            o.step()

    for _ in range(args.warmup):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(args.steps):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - t0
    print(json.dumps({
        "preset": args.preset, "device": torch.cuda.get_device_name() if device.type == "cuda" else platform.processor()
        or "cpu", "threads": torch.get_num_threads(), "micro_batch_tokens": tokens, "seq_len": seq,
        "packed_doc_len": args.packed_doc_len,
        "params": sum(p.numel() for p in model.parameters()), "steps": args.steps,
        "ms_per_step": round(1000 * seconds / args.steps, 2), "tokens_per_s": round(tokens * args.steps / seconds, 1),
        "torch": torch.__version__,
    }))


if __name__ == "__main__":
    main()
