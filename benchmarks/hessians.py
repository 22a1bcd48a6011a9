"""GPTQ Hessian collection time: float32 with Q/K/V sharing one matrix (now) against separate float64 ones (before).

Runs a preset's model (looped, as it is calibrated) on random tokens, `--batches` timed batches of `--tokens` after
one untimed, taking the three ways in turn on every batch so that load on a shared machine falls on all of them:
the forward alone, the float64 per-linear collector (`dtype=torch.float64, share_inputs=False`, the old default) and
the float32 shared one. Prints one JSON line; `hessian_s` is collection minus the forward, per batch (median of
wall seconds), `hessian_cpu_s` the same in process CPU seconds (steadier than wall time on a loaded machine).
Used for docs/BENCHMARKS.md:

    python benchmarks/hessians.py --preset record --tokens 4096 --batches 4
    python benchmarks/hessians.py --preset record --device cuda --tokens 98304 --batches 16   # bf16 autocast, TF32

The float32 matrices' largest relative difference from the float64 ones is printed too (`max_rel_diff`).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time

import torch

from pgolf.model.gpt import GPT
from pgolf.model.recurrence import virtual_layers
from pgolf.options import resolve_config
from pgolf.quant.gptq import HessianCollector
from pgolf.runtime import autocast_for

WAYS = {"fp64_separate": {"dtype": torch.float64, "share_inputs": False}, "fp32_shared": {}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="record")
    ap.add_argument("--tokens", type=int, default=4096, help="tokens per batch (whole sequences of train_seq_len)")
    ap.add_argument("--batches", type=int, default=4)
    ap.add_argument("--device", default="auto")
    args = ap.parse_args()

    cfg = resolve_config(args.preset, [])
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                          ("cpu" if args.device == "auto" else args.device))
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True  # as the trainer sets it
    seq = cfg.train.train_seq_len
    torch.manual_seed(0)
    model = GPT(cfg.model).to(device).eval()
    model.set_looping(cfg.model.num_loops > 0)
    g = torch.Generator().manual_seed(0)
    batches = [torch.randint(0, cfg.model.vocab_size, (max(1, args.tokens // seq), seq), generator=g).to(device)
               for _ in range(args.batches + 1)]
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    seconds: dict[str, list[float]] = {"forward": [], **{w: [] for w in WAYS}}
    cpu_seconds: dict[str, list[float]] = {way: [] for way in seconds}
    collectors = {w: HessianCollector(model, **kw) for w, kw in WAYS.items()}

    def timed(way: str, fn) -> None:
        sync()
        t0, c0 = time.perf_counter(), time.process_time()
        with autocast_for(device):
            fn()
        sync()
        seconds[way].append(time.perf_counter() - t0)
        cpu_seconds[way].append(time.process_time() - c0)

    for i, tokens in enumerate(batches):
        with torch.no_grad():
            timed("forward", lambda: model.hidden(tokens))
        for way, hc in collectors.items():
            with hc:
                timed(way, lambda: hc.collect(tokens))
        if i == 0:  # untimed warm-up batch
            for times in (*seconds.values(), *cpu_seconds.values()):
                times.clear()
    median = {way: statistics.median(times) for way, times in seconds.items()}
    cpu = {way: statistics.median(times) for way, times in cpu_seconds.items()}
    old, new = (collectors[w].hessians for w in WAYS)
    c = cfg.model
    print(json.dumps({
        "preset": args.preset, "device": torch.cuda.get_device_name() if device.type == "cuda" else platform.processor()
        or "cpu", "threads": torch.get_num_threads(), "tokens_per_batch": batches[0].numel(), "batches": args.batches,
        "layer_applications": len(virtual_layers(c.num_layers, c.loop_start, c.loop_end, c.num_loops, model.looping)),
        "distinct_hessians": {w: len(c.distinct()) for w, c in collectors.items()},
        "s_per_batch": {w: round(s, 4) for w, s in median.items()},
        "hessian_s": {w: round(median[w] - median["forward"], 4) for w in WAYS},
        "cpu_s_per_batch": {w: round(s, 4) for w, s in cpu.items()},
        "hessian_cpu_s": {w: round(cpu[w] - cpu["forward"], 4) for w in WAYS},
        "max_rel_diff": max(float((new[n].double() - h).abs().max() / h.abs().max()) for n, h in old.items()),
        "torch": torch.__version__,
    }))


if __name__ == "__main__":
    main()
