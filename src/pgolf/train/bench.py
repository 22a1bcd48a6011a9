"""`pgolf bench`: how fast a preset trains and scores on this machine, on synthetic tokens.

Measured, per process (one GPU, or the CPU): the first steps' time (compilation included), the steady step time and
tokens/s, model FLOPs per step counted by `torch.utils.flop_counter` on one real step (so MFU covers what actually
runs: matmuls and attention, forward and backward), peak device memory, and the flat-eval and TTT-eval throughput of
the preset's evaluation settings on synthetic documents. MFU is reported against the device's dense bf16 peak when
it is known (`PEAK_BF16_FLOPS`), else left out. Synthetic tokens mean no data directory is needed and the figures are
about speed only; the preset's real micro-batch shape is used unless `--set train.micro_batch_tokens=...` changes it.

The result is one JSON object and, with `--markdown FILE`, one table row appended to FILE (docs/BENCHMARKS.md) with
hardware, torch version, date and commit.
"""

from __future__ import annotations

import datetime
import json
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

from pgolf.config import Config
from pgolf.runtime import autocast_for, should_compile

# Dense bf16 tensor-core peaks (no sparsity), from the vendors' data sheets.
PEAK_BF16_FLOPS = {"H100": 989e12, "H200": 989e12, "A100": 312e12}


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return platform.processor() or platform.machine() or "cpu"


def peak_flops(name: str) -> float | None:
    return next((v for k, v in PEAK_BF16_FLOPS.items() if k in name), None)


def synthetic_tokens(n: int, vocab: int, bos_id: int, mean_doc: int, seed: int = 0) -> torch.Tensor:
    """n token ids in [2, vocab) with a BOS starting a document on average every `mean_doc` tokens."""
    gen = torch.Generator().manual_seed(seed)
    tokens = torch.randint(2, vocab, (n,), generator=gen)
    tokens[torch.rand(n, generator=gen) < 1.0 / mean_doc] = bos_id
    tokens[0] = bos_id
    return tokens


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def bench_training(cfg: Config, device: torch.device, steps: int, warmup: int, mean_doc: int = 0) -> dict:
    """Step time and throughput of full optimizer steps at the preset's micro-batch (synthetic documents of
    `mean_doc` tokens on average; 0: half a sequence)."""
    from pgolf.data.segments import document_segments
    from pgolf.model.gpt import GPT
    from pgolf.model.kernels import wanted
    from pgolf.model.precision import body_dtype, cast_body
    from pgolf.optim.groups import build_optimizers

    torch.manual_seed(0)
    if device.type == "cuda":  # as the trainer sets them
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    model = GPT(cfg.model).to(device)
    # What the trainer runs (pgolf/train/trainer.py): the bf16 body and the Triton kernels where they are wanted, and
    # the model compiled whole (fullgraph=True, so a graph break fails here as it would in training).
    cast_body(model, body_dtype(cfg.train.body_dtype, device))
    kernels = wanted(cfg.train.kernels, device)
    model.use_kernels(kernels)
    model.looping = cfg.model.num_loops > 0  # the slower, looped shape most of a record run uses
    compiled = should_compile(cfg.train.compile, device)
    step_model = torch.compile(model, dynamic=False, fullgraph=True) if compiled else model
    opts = build_optimizers(model, cfg.optim)
    tokens, seq = cfg.train.micro_batch_tokens, cfg.train.train_seq_len
    stream = synthetic_tokens(tokens + 1, cfg.model.vocab_size, cfg.model.bos_id, mean_doc=mean_doc or max(2, seq // 2))
    x, y = stream[:-1], stream[1:]
    segments = None
    if cfg.train.loader == "packed":
        x, y = x.view(1, -1), y.view(1, -1)
        segments = document_segments(x, cfg.model.bos_id, seq).to(device)
    else:
        x, y = x.view(-1, seq), y.view(-1, seq)
    x, y = x.to(device), y.to(device)

    def step() -> None:
        for o in opts:
            o.zero_grad(set_to_none=True)
        with autocast_for(device):
            loss = step_model(x, y, segments=segments)
        loss.backward()
        for o in opts:
            o.step()

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    t0 = time.perf_counter()
    for _ in range(warmup):
        step()
    _sync(device)
    first = time.perf_counter() - t0
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    _sync(device)
    seconds = (time.perf_counter() - t0) / steps
    peak_memory = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else None  # before the eager step
    from torch.utils.flop_counter import FlopCounterMode
    # Eager, one step: what the compiled step computes. The Triton kernels are custom ops FlopCounterMode has no
    # formula for, so their eager twins are counted (the same matmuls). Variable-length flash attention (a custom
    # op too) is not counted: with `train.loader = "packed"` on CUDA the attention FLOPs are missing from MFU.
    model.use_kernels(False)
    with FlopCounterMode(display=False) as counter:
        for o in opts:
            o.zero_grad(set_to_none=True)
        with autocast_for(device):
            model(x, y, segments=segments).backward()
    model.use_kernels(kernels)
    flops = counter.get_total_flops()
    out = {"micro_batch_tokens": tokens, "seq_len": seq, "params": sum(p.numel() for p in model.parameters()),
           "warmup_steps": warmup, "warmup_seconds": round(first, 3), "steps": steps,
           "ms_per_step": round(1000 * seconds, 2), "tokens_per_s": round(tokens / seconds, 1),
           "flops_per_step": flops, "achieved_tflops": round(flops / seconds / 1e12, 3)}
    out["compiled"], out["kernels"] = compiled, kernels
    if peak_memory is not None:
        out["peak_memory_gib"] = round(peak_memory / 2**30, 3)
    peak = peak_flops(device_name(device)) if device.type == "cuda" else None
    out["mfu"] = round(flops / seconds / peak, 4) if peak else None
    return out


def bench_eval(cfg: Config, device: torch.device, eval_tokens: int, ttt: bool) -> dict:
    """Scoring throughput of flat eval and, with `ttt`, of the preset's TTT mode, on synthetic documents."""
    from pgolf.eval.evaluate import build_mode, score_stream
    from pgolf.eval.ttt import ttt_settings
    from pgolf.model.gpt import GPT

    torch.manual_seed(0)
    model = GPT(cfg.model).to(device)
    model.looping = cfg.model.num_loops > 0
    seq = cfg.eval.seq_len or cfg.train.train_seq_len
    stream = synthetic_tokens(eval_tokens + 1, cfg.model.vocab_size, cfg.model.bos_id, mean_doc=max(2, seq // 2))
    tokens = stream.numpy().astype(np.int64)
    target_bytes = np.full(eval_tokens, 3, dtype=np.int64)
    # One batch at most the synthetic stream: a preset's batch (the record's 786,432 tokens is 8 ranks' worth) would
    # otherwise set the compiled shapes, and [rows, seq_len, vocab] float32 log-probs, far beyond one GPU's share.
    batch_tokens = min(cfg.eval.batch_tokens, eval_tokens)
    out = {"eval_tokens": eval_tokens, "eval_batch_tokens": batch_tokens}
    modes = [("flat", "flat")]
    if ttt and cfg.eval.mode in ("lora-ttt", "phased-ttt"):
        modes.append(("ttt", cfg.eval.mode))
    for label, name in modes:
        mode = build_mode(name, seq_len=seq, stride=cfg.eval.stride, bos_id=cfg.model.bos_id,
                          ttt=ttt_settings(cfg.eval) if label == "ttt" else None, compile=cfg.eval.compile)
        # As pgolf/eval/evaluate.py scores: the compile warm-up first (on random tokens), timed on its own.
        out[f"{label}_compile_seconds"] = round(mode.prepare(model, device, batch_tokens=batch_tokens), 3)
        _sync(device)
        result = score_stream(model, tokens, target_bytes, mode, batch_tokens=batch_tokens, device=device)
        out[f"{label}_mode"] = name
        out[f"{label}_seconds"] = round(result.seconds, 3)
        out[f"{label}_tokens_per_s"] = round(eval_tokens / result.seconds, 1)
    return out


def commit_hash() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                              cwd=Path(__file__).resolve().parent, timeout=10).stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def run_bench(cfg: Config, *, device: torch.device, steps: int, warmup: int, eval_tokens: int, ttt: bool) -> dict:
    result = {"preset": cfg.preset, "device": device_name(device), "torch": torch.__version__,
              "threads": torch.get_num_threads(), "commit": commit_hash(),
              "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d")}
    result["train"] = bench_training(cfg, device, steps, warmup)
    # On stderr (stdout stays one JSON object): kept in a log even if the eval below runs out of time.
    print(json.dumps({"train": result["train"]}), file=sys.stderr, flush=True)
    if eval_tokens > 0:
        result["eval"] = bench_eval(cfg, device, eval_tokens, ttt)
    return result


def markdown_row(result: dict) -> str:
    t, e = result["train"], result.get("eval", {})
    mfu = f"{100 * t['mfu']:.1f}%" if t.get("mfu") else "n/a"
    mem = f"{t['peak_memory_gib']:.2f}" if "peak_memory_gib" in t else "n/a"
    cells = [result["preset"], result["device"], f"{t['ms_per_step']:.1f}", f"{t['tokens_per_s']:,.0f}", mfu, mem,
             f"{t['warmup_seconds']:.1f}", f"{e['flat_tokens_per_s']:,.0f}" if "flat_tokens_per_s" in e else "n/a",
             f"{e['ttt_tokens_per_s']:,.0f}" if "ttt_tokens_per_s" in e else "n/a",
             f"torch {result['torch']}", result["commit"], result["date"]]
    return "| " + " | ".join(cells) + " |"


MARKDOWN_HEADER = ("| preset | device | ms/step | train tok/s | MFU | peak GiB | warm-up s | flat eval tok/s | "
                   "TTT eval tok/s | software | commit | date |\n|" + "---|" * 12)


def write_outputs(result: dict, json_path: Path | None, markdown_path: Path | None) -> None:
    from pgolf.fileio import atomic_write_json

    if json_path is not None:
        atomic_write_json(json_path, result)
    if markdown_path is not None:
        with open(markdown_path, "a", encoding="utf-8") as f:
            f.write(markdown_row(result) + "\n")
    print(json.dumps(result))
