"""Scoring: flat evaluation of a model on a token stream, and `score_artifact`, which reads only the artifact, the
tokenizer and the val shards.

Flat mode cuts the stream into consecutive windows of `seq_len` targets; window i reads tokens[i*L : i*L+L] and
predicts tokens[i*L+1 : i*L+L+1]. Unlike the official script, which drops the last partial window, the final short
window is scored too, so every token of the split after the first is scored exactly once and the byte denominator
equals the manifest's `bytes` for the split (a check the evaluator makes). Windows are split contiguously across
ranks and the float64 sums are all-reduced.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from pgolf.errors import PgolfError
from pgolf.eval.bpb import bpb_from_sums
from pgolf.train.clock import PhaseClock
from pgolf.train.dist import DistContext, autocast_for

EVAL_MODES = ("flat",)


@dataclass
class EvalResult:
    """Totals of one scored stream."""

    val_loss: float
    val_bpb: float
    nats: float
    tokens: int
    bytes: int
    seconds: float

    def to_dict(self) -> dict:
        return asdict(self)


def flat_windows(n_targets: int, seq_len: int, rank: int = 0, world_size: int = 1) -> tuple[int, int]:
    """The contiguous range [first, last) of window indices that `rank` scores (window i covers targets
    i*seq_len+1 .. min((i+1)*seq_len, n_targets))."""
    n_windows = math.ceil(n_targets / seq_len)
    return n_windows * rank // world_size, n_windows * (rank + 1) // world_size


@torch.no_grad()
def score_windows(model: torch.nn.Module, tokens: np.ndarray, target_bytes: np.ndarray, first: int, last: int, *,
                  seq_len: int, per_batch: int, device: torch.device) -> tuple[torch.Tensor, int, int]:
    """Sum of nats (float64 tensor), scored targets and their bytes over windows [first, last)."""
    n_targets = len(tokens) - 1
    nats = torch.zeros((), dtype=torch.float64, device=device)
    scored = num_bytes = 0
    w = first
    while w < last:
        # Full windows go in batches; the final partial window (if any) is its own batch.
        full_end = min(last, w + per_batch, n_targets // seq_len)
        if full_end > w:
            a, b, rows = w * seq_len, full_end * seq_len, full_end - w
            w = full_end
        else:
            a, b, rows = w * seq_len, n_targets, 1
            w += 1
        x = torch.from_numpy(np.asarray(tokens[a:b], dtype=np.int64).reshape(rows, -1)).to(device)
        y = torch.from_numpy(np.asarray(tokens[a + 1:b + 1], dtype=np.int64).reshape(rows, -1)).to(device)
        with autocast_for(device):
            loss = model(x, y, reduction="none")
        nats += loss.double().sum()
        scored += b - a
        num_bytes += int(target_bytes[a:b].sum())
    return nats, scored, num_bytes


def score_flat(model: torch.nn.Module, tokens: np.ndarray, target_bytes: np.ndarray, *, seq_len: int,
               batch_tokens: int, device: torch.device, ctx: DistContext | None = None) -> EvalResult:
    """Score every target tokens[1:] once with non-overlapping windows of `seq_len`, split across ranks.

    `target_bytes[i]` is the byte count charged to target tokens[i+1] (from `pgolf.data.bytes.token_bytes`).
    """
    start = time.perf_counter()
    n_targets = len(tokens) - 1
    if n_targets <= 0:
        raise PgolfError("evaluation stream has fewer than 2 tokens")
    if len(target_bytes) != n_targets:
        raise PgolfError(f"internal: {len(target_bytes)} byte counts for {n_targets} targets")
    rank, world = (ctx.rank, ctx.world_size) if ctx else (0, 1)
    first, last = flat_windows(n_targets, seq_len, rank, world)
    was_training = model.training
    model.eval()
    try:
        nats, scored, num_bytes = score_windows(model, tokens, target_bytes, first, last, seq_len=seq_len,
                                                per_batch=max(1, batch_tokens // (seq_len * world)), device=device)
    finally:
        model.train(was_training)
    totals = torch.tensor([float(scored), float(num_bytes)], dtype=torch.float64, device=device)
    if ctx is not None:
        ctx.all_reduce_sum(nats)
        ctx.all_reduce_sum(totals)
    tokens_scored, bytes_scored = int(totals[0].item()), int(totals[1].item())
    if tokens_scored != n_targets:
        raise PgolfError(f"internal: scored {tokens_scored} of {n_targets} targets")
    total_nats = float(nats.item())
    val_loss, val_bpb = bpb_from_sums(total_nats, tokens_scored, bytes_scored)
    return EvalResult(val_loss, val_bpb, total_nats, tokens_scored, bytes_scored, time.perf_counter() - start)


class ValidationData:
    """The val stream, its per-target byte counts and the manifest totals they must match."""

    def __init__(self, data_dir: str | Path, expected_vocab: int | None = None, max_tokens: int = 0) -> None:
        from pgolf.data.build import check_data_dir
        from pgolf.data.bytes import byte_tables, token_bytes
        from pgolf.data.loader import load_split
        from pgolf.data.tokenizer import load_tokenizer

        self.manifest, self.tokenizer_path = check_data_dir(data_dir, expected_vocab=expected_vocab)
        vocab = expected_vocab or int(self.manifest["tokenizer"]["vocab_size"])
        tables = byte_tables(load_tokenizer(self.tokenizer_path), vocab)
        tokens = load_split(data_dir, "val")
        self.full = not (0 < max_tokens < len(tokens))
        self.tokens = tokens if self.full else tokens[:max_tokens]
        try:
            self.target_bytes = token_bytes(self.tokens, tables)
        except PgolfError as exc:
            raise PgolfError(f"{data_dir}: val shards: {exc}") from None
        if self.full:
            expected = int(self.manifest["splits"]["val"]["bytes"])
            if int(self.target_bytes.sum()) != expected:
                raise PgolfError(f"{data_dir}: val bytes {int(self.target_bytes.sum())} disagree with the manifest's "
                                 f"{expected}; the data directory is inconsistent")

    def score(self, model: torch.nn.Module, *, seq_len: int, batch_tokens: int, device: torch.device,
              ctx: DistContext | None = None, mode: str = "flat") -> EvalResult:
        if mode not in EVAL_MODES:
            raise PgolfError(f"unknown eval mode {mode!r} (available: {', '.join(EVAL_MODES)})")
        return score_flat(model, self.tokens, self.target_bytes, seq_len=seq_len, batch_tokens=batch_tokens,
                          device=device, ctx=ctx)


def model_from_artifact(artifact, path: str | Path, device: torch.device) -> tuple[torch.nn.Module, "object"]:
    """Rebuild the ONE model definition from an artifact's embedded config and dequantized weights."""
    from pgolf.config import Config
    from pgolf.model.gpt import GPT

    cfg = Config.from_dict(artifact.config)
    model = GPT(cfg.model)
    state = artifact.state_dict()
    missing, unexpected = set(model.state_dict()) - set(state), set(state) - set(model.state_dict())
    if missing or unexpected:
        raise PgolfError(f"{path}: tensors do not match the embedded config "
                         f"(missing: {sorted(missing)[:3]}, unexpected: {sorted(unexpected)[:3]})")
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise PgolfError(f"{path}: tensor shapes do not match the embedded config: "
                         f"{str(exc).splitlines()[-1].strip()}") from None
    return model.to(device), cfg


def score_artifact(artifact_path: str | Path, data_dir: str | Path, *, mode: str = "flat", seq_len: int = 0,
                   batch_tokens: int = 0, device: torch.device | None = None, ctx: DistContext | None = None,
                   clock: PhaseClock | None = None, code_bytes: int | None = None,
                   enforce_cap: bool = True) -> dict:
    """Score an artifact file: decompress, rebuild the model, score the val split. Reads nothing else.

    `enforce_cap` refuses an artifact whose bytes plus code bytes exceed the cap (the trainer scores over-cap
    runs anyway so that result.json can record them, then exits non-zero). Returns a dict with val_loss, val_bpb, tokens, bytes, artifact bytes and the phase times.
    """
    from pgolf.artifact.format import check_cap, load_artifact

    device = device or torch.device("cpu")
    clock = clock or PhaseClock(sync=torch.cuda.synchronize if device.type == "cuda" else None)
    with clock.phase("decompression"):
        artifact = load_artifact(artifact_path)
    meta = artifact.header.get("meta", {})
    code = int(meta.get("code_bytes", 0)) if code_bytes is None else code_bytes
    total = artifact.file_bytes + code
    if enforce_cap:
        check_cap(artifact.file_bytes, code, artifact_path)
    with clock.phase("model_load"):
        model, cfg = model_from_artifact(artifact, artifact_path, device)
    with clock.phase("val_load"):
        val = ValidationData(data_dir, expected_vocab=cfg.model.vocab_size)
    sha = artifact.tokenizer.get("sha256")
    if sha and sha != val.manifest["tokenizer"]["sha256"]:
        raise PgolfError(f"{artifact_path}: tokenizer mismatch: the artifact was trained with "
                         f"{artifact.tokenizer.get('file')} (sha256 {sha[:12]}) but {data_dir} uses "
                         f"{val.manifest['tokenizer']['file']} (sha256 {val.manifest['tokenizer']['sha256'][:12]})")
    seq_len = seq_len or cfg.eval.seq_len or cfg.train.train_seq_len
    batch_tokens = batch_tokens or cfg.eval.batch_tokens
    with clock.phase("scoring"):
        result = val.score(model, seq_len=seq_len, batch_tokens=batch_tokens, device=device, ctx=ctx, mode=mode)
    return {
        "mode": mode,
        "val_loss": result.val_loss,
        "val_bpb": result.val_bpb,
        "val_tokens": result.tokens,
        "val_bytes": result.bytes,
        "seq_len": seq_len,
        "artifact": Path(artifact_path).name,
        "artifact_bytes": artifact.file_bytes,
        "code_bytes": code,
        "total_bytes": total,
        "phases": clock.as_dict(),
    }
