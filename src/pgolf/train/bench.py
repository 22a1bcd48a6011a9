"""`pgolf bench`: how fast a preset trains and scores on this machine, on synthetic tokens.

Measured, per process (one GPU, or the CPU), in two stages that can run alone (`--no-train`, `--eval-tokens 0`):

- training: the first steps' time (compilation included), the steady step time and tokens/s, peak device memory over
  the timed steps, and model FLOPs per step (forward and backward, optimizer excluded: `count_step_flops`), from
  which MFU against the device's dense bf16 peak when it is known (`PEAK_BF16_FLOPS`), else left out;
- eval: the flat-eval and TTT-eval throughput of the preset's evaluation settings on synthetic documents.

Each stage writes `bench: <stage> started <UTC time>` on stderr before it starts, and the training figures are
written on stderr as soon as they exist, so a log keeps them if the eval stage runs out of time. Synthetic tokens
mean no data directory is needed and the figures are about speed only; the preset's real micro-batch shape is used
unless `--set train.micro_batch_tokens=...` changes it.

FLOPs are counted on shapes alone: the same model is built on the `meta` device and one training step's forward and
backward run there under `torch.utils.flop_counter.FlopCounterMode`, so nothing is allocated (a real eager step of
the record's 98,304-token micro-batch would hold about 68 GiB for autograd on one GPU). Matmuls are counted by
FlopCounterMode; attention is counted per segment by `attention_flops`, in FlopCounterMode's own SDPA convention,
because neither path the model takes is countable as it runs: variable-length flash attention (packed batches on
CUDA) is a custom op with no formula in torch 2.11 and, off CUDA, packed attention gathers padded segments.

The result is printed as a table (`format_result`; the device is the CUDA device's name or the CPU's model), or as
one JSON object with `--json` (`--json FILE` writes it to FILE instead), and with `--markdown FILE` one table row is
appended to FILE (docs/BENCHMARKS.md) with hardware, torch version, date and commit.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import json
import math
import platform
import subprocess
import sys
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from pgolf.config import Config
from pgolf.runtime import autocast_for, should_compile

if TYPE_CHECKING:
    from pgolf.data.segments import Segments
    from pgolf.model.gpt import GPT

# Dense bf16 tensor-core peaks (no sparsity), from the vendors' data sheets.
PEAK_BF16_FLOPS = {"H100": 989e12, "H200": 989e12, "A100": 312e12}


def device_name(device: torch.device) -> str:
    """The CUDA device's name, or the CPU's model (`cpu_model`)."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return cpu_model()


def cpu_model(cpuinfo: str | Path = "/proc/cpuinfo") -> str:
    """The CPU's model name as Linux reports it (`model name`, or `Model`/`Hardware` on ARM boards, in
    /proc/cpuinfo), else what `platform` knows (on Linux `platform.processor()` is only the machine type)."""
    try:
        lines = Path(cpuinfo).read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        lines = []
    for wanted in ("model name", "Model", "Hardware"):
        for line in lines:
            key, sep, value = line.partition(":")
            if sep and key.strip() == wanted and value.strip():
                return " ".join(value.split())
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


def _utc_now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def _stage(name: str) -> None:
    """`bench: <name> started <UTC time>` on stderr, flushed: a log shows which stage a timeout stopped."""
    print(f"bench: {name} started {_utc_now()}", file=sys.stderr, flush=True)


# --- FLOPs per training step, counted on shapes alone ----------------------------------------------------------------

def attention_flops(heads: int, head_dim: int, lengths: Iterable[int], value_dim: int | None = None
                    ) -> tuple[int, int]:
    """(forward, backward) FLOPs of self-attention over segments of the given lengths, each attending only within
    itself, with `heads` query heads of `head_dim` (values of `value_dim`, default `head_dim`).

    The convention is FlopCounterMode's for SDPA and flash attention (torch/utils/flop_counter.py,
    `sdpa_flop_count` and `sdpa_backward_flop_count`), applied per segment as its formula for nested (jagged)
    flash attention does: 2 FLOPs per multiply-add; every segment of length L counts the full L x L score matrix
    (causality is not discounted); key/value heads shared by grouped-query attention count once per query head (the
    kernels broadcast them; torch 2.13's formula counts the query heads). With Dq = head_dim, Dv = value_dim:
    forward 2*H*L^2*(Dq + Dv) (Q K^T and P V); backward 2*H*L^2*(3*Dq + 2*Dv) (the scores recomputed, then dP = dO
    V^T, dV = P^T dO, dQ = dS K and dK = dS^T Q), i.e. 4*H*L^2*D and 10*H*L^2*D when Dq = Dv = D.
    """
    return _attention_flops(heads, head_dim, head_dim if value_dim is None else value_dim,
                            sum(int(n) * int(n) for n in lengths))


def _attention_flops(heads: int, dq: int, dv: int, square: int) -> tuple[int, int]:
    """`attention_flops` from `square`, the sum over segments of Lq * Lk."""
    return 2 * heads * square * (dq + dv), 2 * heads * square * (3 * dq + 2 * dv)


class _ShapeOnlyAttention(torch.autograd.Function):
    """Attention as the FLOP count sees it: an output shaped like the real one (q's shape, v's head size) and
    gradients for q, k and v, none of them computed; its FLOPs, given, are added to `tally` when the forward and
    the backward run."""

    @staticmethod
    def forward(ctx, q, k, v, flops: tuple[int, int], tally: list[int]):
        ctx.shapes, ctx.backward_flops, ctx.tally = (q.shape, k.shape, v.shape), flops[1], tally
        tally[0] += flops[0]
        return q.new_empty((*q.shape[:-1], v.size(-1)))

    @staticmethod
    def backward(ctx, grad):
        ctx.tally[0] += ctx.backward_flops
        return (*(grad.new_empty(shape) for shape in ctx.shapes), None, None)


def _qkv(query, key, value, *args, **kwargs):
    return query, key, value


class _CountedSDPA(torch.overrides.TorchFunctionMode):
    """Every `F.scaled_dot_product_attention` call becomes `_ShapeOnlyAttention`, counted by `attention_flops`:
    q [..., H, Lq, D] over k, v [..., Hkv, Lk, D] is prod(...) segments of Lq x Lk (the unpacked layout's rows)."""

    def __init__(self, tally: list[int]) -> None:
        super().__init__()
        self.tally = tally

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is not torch.nn.functional.scaled_dot_product_attention:
            return func(*args, **kwargs)
        q, k, v = _qkv(*args, **kwargs)
        square = math.prod(q.shape[:-3]) * q.size(-2) * k.size(-2)
        flops = _attention_flops(q.size(-3), q.size(-1), v.size(-1), square)
        return _ShapeOnlyAttention.apply(q, k, v, flops, self.tally)


@contextlib.contextmanager
def _counted_attention(tally: list[int], segment_lengths: list[int] | None) -> Iterator[None]:
    """Within: attention counts into `tally` instead of running. SDPA through `_CountedSDPA`; the packed layout's
    `pgolf.model.attention.segment_attention` (looked up by `Attention.forward` at call time) is swapped for the
    same stand-in over `segment_lengths`, the real lengths read on the CPU (the meta segments have no values, and
    the padded path it would take off CUDA needs them: its boolean mask has no meta shape)."""
    import pgolf.model.attention as attention_module

    def segment_attention(q, k, v, segments):
        if segment_lengths is None:
            raise RuntimeError("count_step_flops: the model attended by segments but was given none")
        flops = attention_flops(q.size(1), q.size(-1), segment_lengths, v.size(-1))
        return _ShapeOnlyAttention.apply(q, k, v, flops, tally)

    real = attention_module.segment_attention
    attention_module.segment_attention = segment_attention
    try:
        with _CountedSDPA(tally):
            yield
    finally:
        attention_module.segment_attention = real


def counting_model(cfg: Config) -> GPT:
    """The preset's model as the bench trains it (looping on where the preset loops, the eager twins of the Triton
    kernels) with every parameter and buffer on the `meta` device: shapes, no storage. Orthogonal initialisation is
    left out (it reads values; values do not change a FLOP count), and the body stays float32: dtypes do not
    change which matmuls run, and bf16 autocast has no meta device to run on."""
    from pgolf.model.gpt import GPT

    with torch.device("meta"):
        model = GPT(dataclasses.replace(cfg.model, ortho_init=False))
    model.use_kernels(False)
    model.set_looping(cfg.model.num_loops > 0)
    return model


@dataclasses.dataclass(frozen=True)
class StepFlops:
    total: int      # forward + backward of one micro-batch, attention included
    attention: int  # the attention part (`attention_flops`)


def count_step_flops(cfg: Config, shape: tuple[int, int], segments: Segments | None = None) -> StepFlops:
    """FLOPs of one training micro-batch's forward and backward (the loss's, as `bench_training` steps; the
    optimizer's are not model FLOPs) for a batch of `shape` [rows, tokens], cut into `segments` when given (the
    packed layout; CPU segments, as `document_segments` returns them).

    Nothing is allocated: `counting_model` runs on the `meta` device under FlopCounterMode, which counts the
    matmuls (mm, addmm, bmm) forward and backward as a real eager step on CUDA would, and attention is counted
    per segment by `attention_flops` (FlopCounterMode's SDPA convention: the full square per segment, so a packed
    row of short documents counts far less than its length squared). On the unpacked layout this equals what
    FlopCounterMode counts on a real eager step whose SDPA kernel has a formula (CUDA's flash and efficient
    kernels; tests/train/test_bench.py registers one for the CPU kernel to compare); on the packed layout it is
    what torch 2.13's formula for `varlen_attn` counts on CUDA, where torch 2.11 has none."""
    from torch.utils.flop_counter import FlopCounterMode

    model = counting_model(cfg)
    ids = torch.zeros(shape, dtype=torch.long, device="meta")
    lengths, meta_segments = None, None
    if segments is not None:
        bounds = segments.cu_seqlens[:segments.count + 1].tolist()
        lengths = [end - start for start, end in zip(bounds, bounds[1:])]
        meta_segments = segments.to("meta")
    tally = [0]
    with _counted_attention(tally, lengths), FlopCounterMode(display=False) as counter:
        model(ids, ids, segments=meta_segments).backward()
    return StepFlops(total=counter.get_total_flops() + tally[0], attention=tally[0])


# --- training and eval throughput ------------------------------------------------------------------------------------

def bench_training(cfg: Config, device: torch.device, steps: int, warmup: int, mean_doc: int = 0) -> dict:
    """Step time and throughput of full optimizer steps at the preset's micro-batch (synthetic documents of
    `mean_doc` tokens on average; 0: half a sequence), peak memory over the timed steps, and the FLOPs of one
    step's forward and backward (`count_step_flops`, counted first: on shapes only, it allocates nothing)."""
    from pgolf.data.segments import document_segments
    from pgolf.model.gpt import GPT
    from pgolf.model.kernels import wanted
    from pgolf.model.precision import body_dtype, cast_body
    from pgolf.optim.groups import build_optimizers

    tokens, seq = cfg.train.micro_batch_tokens, cfg.train.train_seq_len
    stream = synthetic_tokens(tokens + 1, cfg.model.vocab_size, cfg.model.bos_id, mean_doc=mean_doc or max(2, seq // 2))
    x, y = stream[:-1], stream[1:]
    segments = None
    if cfg.train.loader == "packed":
        x, y = x.view(1, -1), y.view(1, -1)
        segments = document_segments(x, cfg.model.bos_id, seq)
    else:
        x, y = x.view(-1, seq), y.view(-1, seq)
    flops = count_step_flops(cfg, tuple(x.shape), segments)  # seconds, no memory: a bad config fails before training

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
    model.set_looping(cfg.model.num_loops > 0)  # the slower, looped shape most of a record run uses
    compiled = should_compile(cfg.train.compile, device)
    step_model = torch.compile(model, dynamic=False, fullgraph=True) if compiled else model
    opts = build_optimizers(model, cfg.optim)
    x, y = x.to(device), y.to(device)
    if segments is not None:
        segments = segments.to(device)

    def step() -> None:
        for o in opts:
            o.zero_grad(set_to_none=True)
        with autocast_for(device):
            loss = step_model(x, y, segments=segments)
        loss.backward()
        for o in opts:
            o.step()

    t0 = time.perf_counter()
    for _ in range(warmup):
        step()
    _sync(device)
    first = time.perf_counter() - t0
    if device.type == "cuda":  # the timed steps' peak: weights, optimizer state, one step's activations
        torch.cuda.reset_peak_memory_stats(device)
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    _sync(device)
    seconds = (time.perf_counter() - t0) / steps
    out = {"micro_batch_tokens": tokens, "seq_len": seq, "params": sum(p.numel() for p in model.parameters()),
           "warmup_steps": warmup, "warmup_seconds": round(first, 3), "steps": steps,
           "ms_per_step": round(1000 * seconds, 2), "tokens_per_s": round(tokens / seconds, 1),
           "flops_per_step": flops.total, "attention_flops_per_step": flops.attention,
           "achieved_tflops": round(flops.total / seconds / 1e12, 3)}
    out["compiled"], out["kernels"] = compiled, kernels
    if device.type == "cuda":
        out["peak_memory_gib"] = round(torch.cuda.max_memory_allocated(device) / 2**30, 3)
    peak = peak_flops(device_name(device)) if device.type == "cuda" else None
    out["mfu"] = round(flops.total / seconds / peak, 4) if peak else None
    return out


def bench_eval(cfg: Config, device: torch.device, eval_tokens: int, ttt: bool) -> dict:
    """Scoring throughput of flat eval and, with `ttt`, of the preset's TTT mode, on synthetic documents."""
    from pgolf.eval.evaluate import build_mode, score_stream
    from pgolf.model.gpt import GPT

    torch.manual_seed(0)
    model = GPT(cfg.model).to(device)
    model.set_looping(cfg.model.num_loops > 0)
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
                          ttt=cfg.ttt if label == "ttt" else None, compile=cfg.eval.compile)
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


def run_bench(cfg: Config, *, device: torch.device, steps: int, warmup: int, eval_tokens: int, ttt: bool,
              train: bool = True) -> dict:
    """The training stage (unless `train` is false), then the eval stage (unless `eval_tokens` is 0): one dict,
    with "train" and "eval" for the stages that ran."""
    result = {"preset": cfg.preset, "device": device_name(device), "torch": torch.__version__,
              "threads": torch.get_num_threads(), "commit": commit_hash(),
              "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d")}
    if train:
        _stage("training")
        result["train"] = bench_training(cfg, device, steps, warmup)
        # On stderr, as JSON (stdout holds the result at the end): kept in a log even if the eval runs out of time.
        print(json.dumps({"train": result["train"]}), file=sys.stderr, flush=True)
    if eval_tokens > 0:
        _stage("eval")
        result["eval"] = bench_eval(cfg, device, eval_tokens, ttt)
    return result


def markdown_row(result: dict) -> str:
    """One docs/BENCHMARKS.md row (MARKDOWN_HEADER's columns); a stage that did not run gives n/a cells."""
    t, e = result.get("train", {}), result.get("eval", {})

    def cell(table: dict, key: str, fmt: str) -> str:
        return format(table[key], fmt) if table.get(key) is not None else "n/a"

    mfu = f"{100 * t['mfu']:.1f}%" if t.get("mfu") else "n/a"
    cells = [result["preset"], result["device"], cell(t, "ms_per_step", ".1f"), cell(t, "tokens_per_s", ",.0f"), mfu,
             cell(t, "peak_memory_gib", ".2f"), cell(t, "warmup_seconds", ".1f"), cell(e, "flat_tokens_per_s", ",.0f"),
             cell(e, "ttt_tokens_per_s", ",.0f"), f"torch {result['torch']}", result["commit"], result["date"]]
    return "| " + " | ".join(cells) + " |"


MARKDOWN_HEADER = ("| preset | device | ms/step | train tok/s | MFU | peak GiB | warm-up s | flat eval tok/s | "
                   "TTT eval tok/s | software | commit | date |\n|" + "---|" * 12)


def write_outputs(result: dict, json_path: Path | None, markdown_path: Path | None) -> None:
    """The result as JSON in `json_path` and as one row appended to `markdown_path` (either may be None)."""
    from pgolf.fileio import atomic_write_json

    if json_path is not None:
        atomic_write_json(json_path, result)
    if markdown_path is not None:
        with open(markdown_path, "a", encoding="utf-8") as f:
            f.write(markdown_row(result) + "\n")


def format_result(result: dict) -> str:
    """The result for people, as `pgolf bench` prints it: a heading line, then one aligned row per figure of each
    stage that ran (`--json` prints the same figures as JSON)."""
    t, e = result.get("train"), result.get("eval")
    rows: list[tuple[str, str]] = []
    if t:
        rows.append((f"training: micro-batch {t['micro_batch_tokens']:,} tokens, rows of {t['seq_len']:,}, "
                     f"{t['params']:,} parameters", ""))
        rows += [("warm-up", f"{t['warmup_steps']} step(s) in {t['warmup_seconds']:.1f} s (compiled: "
                             f"{'yes' if t['compiled'] else 'no'}, Triton kernels: {'yes' if t['kernels'] else 'no'})"),
                 ("step time", f"{t['ms_per_step']:,.1f} ms (mean of {t['steps']} step(s))"),
                 ("throughput", f"{t['tokens_per_s']:,.0f} tokens/s"),
                 ("model FLOPs", f"{t['flops_per_step']:.3e} per step (attention {t['attention_flops_per_step']:.3e})"),
                 ("achieved", f"{t['achieved_tflops']:.3f} TFLOP/s"),
                 ("MFU", f"{100 * t['mfu']:.1f}% of the dense bf16 peak" if t.get("mfu") else "n/a (no known peak)"),
                 ("peak memory", f"{t['peak_memory_gib']:.2f} GiB" if "peak_memory_gib" in t else "n/a (CUDA only)")]
    if e:
        rows.append((f"eval: {e['eval_tokens']:,} synthetic tokens, batches of {e['eval_batch_tokens']:,}", ""))
        for label in ("flat", "ttt"):
            if f"{label}_mode" in e:
                rows.append((f"{e[f'{label}_mode']} eval",
                             f"{e[f'{label}_tokens_per_s']:,.0f} tokens/s ({e[f'{label}_seconds']:.2f} s; compile "
                             f"warm-up {e[f'{label}_compile_seconds']:.1f} s)"))
    width = max((len(name) for name, value in rows if value), default=0)
    lines = [f"bench {result['preset']} on {result['device']} (torch {result['torch']}, {result['threads']} "
             f"thread(s), commit {result['commit']}, {result['date']})"]
    lines += [f"  {name:<{width}}  {value}" if value else name for name, value in rows]
    return "\n".join(lines)
