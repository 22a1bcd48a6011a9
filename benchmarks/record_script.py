"""The 1.0611 record's own training script (PR #1855), made runnable on one GPU without FlashAttention-3 (issue 20).

To time pgolf's `record` preset against the record itself on the same GPU with the same attention kernels, the
record's `train_gpt.py` must run where `flash_attn_interface` (FA3) is not installed. Nothing of the record enters the
project's tracked files: at preparation time this tool reads the script from a read-only git copy of
openai/parameter-golf and applies the small exact-once text patches of `PATCHES` (old anchor -> new text; each anchor
is one line or one import of the record, quoted only to find the spot), writing the result into a git-ignored folder:

    python benchmarks/record_script.py prepare --mirror /work/.mirror/openai+parameter-golf/repo \\
        --out local/gpu_carry/record
    python benchmarks/record_script.py shards --out /tmp/record_data \\
        --tokenizer local/gpu_carry/record/fineweb_8192_bpe_lossless_caps_caseops_v1_reserved.model
    bash benchmarks/record_script_run.sh /tmp/record_data 30

Subcommands:

- `prepare`: DIR/train_gpt.py (patched), DIR/<tokenizer>.model (the record's SentencePiece model, as is) and
  DIR/SOURCE.txt (mirror commit, record path, SHA-256 of the original and patched script, the patches applied). Every
  anchor must occur exactly once, else exit 2 with one line naming the patch and nothing is written; each file is
  written to a temporary name and renamed into place.
- `shards`: synthetic data shaped like the record's CaseOps export (its `prepare_caseops_data.py` layout, flat in one
  folder): `fineweb_train_NNNNNN.bin` (10M tokens each by default), `fineweb_val_000000.bin` and its per-token
  original-byte sidecar `fineweb_val_bytes_000000.bin` (the record loads it with CASEOPS_ENABLED=1), all in the
  challenge shard format, written with `pgolf.data.shards.write_shard`. Documents start with the tokenizer's BOS
  (id 1, the id the record's loader hard-codes), lengths log-normal with a mean of 950 tokens (the record's val split:
  47.85M tokens over 50,000 documents), ids Zipf-distributed over the tokenizer's non-control pieces. Also
  `record_shards.json` (what was written) and `cu_buckets_1gpu.txt`: the padded `cu_seqlens` lengths the record's
  packing loader will meet on ONE GPU over a whole pass of the train shards, so the run script can warm up (compile)
  exactly those shapes (`PGOLF_WARMUP_CU_BUCKETS`) instead of the record's four.
- `check-imports FILE`: parses FILE's imports with `ast` and imports each module and name with the running Python
  (run it with the GPU image's interpreter); exit 1 if a module-level import fails (imports inside functions are
  listed as warnings: they only run in the stages a timing run skips).

Needs numpy and pgolf (from src/ when it is not installed); the tokenizer is read by a small protobuf reader here,
so SentencePiece is not needed. Bad input: one line on stderr, exit 2.
"""

from __future__ import annotations

import argparse
import ast
import hashlib
import importlib
import importlib.util
import json
import math
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
RECORD_DIR = "records/track_10min_16mb/2026-04-27_SP8192_LQER_SparseGate_BOSSmearFix_9HpStack_1.0611"
SCRIPT_NAME = "train_gpt.py"

# The record's packing loader on one GPU (its DocumentPackingLoader and _build_cu_seqlens, read for these numbers):
# TRAIN_BATCH_TOKENS 786,432 over grad_accum_steps = 8 // WORLD_SIZE micro-batches, one packed row each, attention
# cut at every BOS and every TRAIN_SEQ_LEN tokens, cu_seqlens padded with the row length to a multiple of 64.
MICRO_BATCH_TOKENS = 786_432 // 8
TRAIN_SEQ_LEN = 2048
CU_BUCKET = 64
RECORD_BOS_ID = 1  # the record's loader sets BOS_ID = 1 whatever the tokenizer says
MAX_DOC_TOKENS = 16_384
MIN_TRAIN_SHARD = MICRO_BATCH_TOKENS + 1 + MAX_DOC_TOKENS  # a BOS and one micro-batch after it, always
MIN_VAL_TOKENS = 2 * TRAIN_SEQ_LEN + 1


class ToolError(Exception):
    """Bad input or a failed step: one line for stderr."""


@dataclass(frozen=True)
class Patch:
    name: str
    old: str  # exactly one occurrence in the record's script
    new: str
    why: str


# The code that replaces the FA3 import: our own, written for the record's two call patterns (read in its
# CausalSelfAttention.forward and the TTT blocks): flash_attn_varlen_func(q[0], k[0], v[0], cu_seqlens_q=cu,
# cu_seqlens_k=cu, max_seqlen_q=n, max_seqlen_k=n, causal=True, window_size=(-1, -1))[None] on (T, H, D) rows, and
# flash_attn_3_func(q, k, v, causal=True) on (B, T, H, D); both take a tensor back (no LSE).
_SHIM = '''\
# --- pgolf benchmarks/record_script.py, patch "fa3-to-varlen-attn" -------------------------------------------------
# FlashAttention-3 (flash_attn_interface) is not installed here. The two FA3 functions this script calls are rebuilt
# on torch.nn.attention.varlen.varlen_attn (torch's FlashAttention-2 kernels, a torch.compile-able custom op):
# causal is window_size=(-1, 0) there; GQA (8 query / 4 kv heads) is native in torch 2.11, and torch >= 2.13 wants
# enable_gqa=True, so the keyword is passed only where varlen_attn's signature has it. q, k, v go in as one half
# dtype (bf16 unless they are fp16 already: what FA3 required of its callers); the output, shaped like q as FA3's,
# comes back in q's dtype (a no-op for the bf16 q of the record's runs).
import inspect as _pgolf_inspect
from torch.nn.attention.varlen import varlen_attn as _pgolf_varlen_attn

_PGOLF_VARLEN_KWARGS = (
    {"enable_gqa": True} if "enable_gqa" in _pgolf_inspect.signature(_pgolf_varlen_attn).parameters else {}
)
_PGOLF_TRAIN_ONLY = os.environ.get("PGOLF_TRAIN_ONLY", "0") == "1"


def flash_attn_varlen_func(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, softmax_scale=None,
                           causal=False, window_size=(-1, -1)):
    dtype = q.dtype if q.dtype in (torch.float16, torch.bfloat16) else torch.bfloat16
    left, right = int(window_size[0]), int(window_size[1])
    if causal:
        right = 0
    y = _pgolf_varlen_attn(q.to(dtype), k.to(dtype), v.to(dtype), cu_seqlens_q, cu_seqlens_k, max_seqlen_q,
                           max_seqlen_k, scale=softmax_scale, window_size=(left, right), **_PGOLF_VARLEN_KWARGS)
    return y.to(q.dtype)


def flash_attn_3_func(q, k, v, softmax_scale=None, causal=False, window_size=(-1, -1)):
    b, t = q.shape[0], q.shape[1]
    cu = torch.arange(0, (b + 1) * t, t, dtype=torch.int32, device=q.device)
    y = flash_attn_varlen_func(q.reshape(b * t, q.shape[2], q.shape[3]), k.reshape(b * t, k.shape[2], k.shape[3]),
                               v.reshape(b * t, v.shape[2], v.shape[3]), cu, cu, t, t, softmax_scale=softmax_scale,
                               causal=causal, window_size=window_size)
    return y.reshape(b, t, q.shape[2], v.shape[3])


def _pgolf_train_only_exit(h):
    log("pgolf_train_only: PGOLF_TRAIN_ONLY=1, stopping after the training loop "
        "(no EMA swap, GPTQ, serialization, eval or TTT)")
    if h.distributed and dist.is_initialized():
        dist.destroy_process_group()
    sys.exit(0)


_pgolf_last_log = [0.0, 0]


def _pgolf_interval_ms(elapsed_ms, step):
    ms = (elapsed_ms - _pgolf_last_log[0]) / max(step - _pgolf_last_log[1], 1)
    _pgolf_last_log[0], _pgolf_last_log[1] = elapsed_ms, step
    return ms


def _pgolf_warmup_cu_buckets(default):
    raw = os.environ.get("PGOLF_WARMUP_CU_BUCKETS", "").strip()
    if not raw:
        return default
    buckets = tuple(sorted({int(v) for v in raw.split(",") if v.strip()}))
    if not buckets or any(b <= 0 or b % default[0] for b in buckets):
        raise ValueError(f"PGOLF_WARMUP_CU_BUCKETS={raw!r}: want multiples of {default[0]}")
    return buckets
# --- end of pgolf patch -------------------------------------------------------------------------------------------'''

PATCHES: tuple[Patch, ...] = (
    Patch(
        "fa3-to-varlen-attn",
        "from flash_attn_interface import (\n"
        "    flash_attn_func as flash_attn_3_func,\n"
        "    flash_attn_varlen_func,\n"
        ")",
        _SHIM,
        "FA3 is absent on the GPU machine: the import is replaced by flash_attn_varlen_func and flash_attn_3_func "
        "rebuilt on torch's varlen_attn (the call sites are untouched), plus the helpers of the patches below",
    ),
    Patch(
        "train-only-no-final-val",
        "last_step or h.val_loss_every > 0 and step % h.val_loss_every == 0",
        "(last_step and not _PGOLF_TRAIN_ONLY) or h.val_loss_every > 0 and step % h.val_loss_every == 0",
        "with PGOLF_TRAIN_ONLY=1 the last step does not run the full validation (VAL_LOSS_EVERY=0 stops the others)",
    ),
    Patch(
        "train-only-exit",
        '\n    log("ema:applying EMA weights")\n',
        '\n    if _PGOLF_TRAIN_ONLY:\n        _pgolf_train_only_exit(h)\n    log("ema:applying EMA weights")\n',
        "with PGOLF_TRAIN_ONLY=1 the script exits right after the training loop (and its peak-memory line): no EMA "
        "swap, GPTQ, serialization, eval or TTT",
    ),
    Patch(
        "step-time-log",
        'tok/s: {tok_per_sec:.0f}"',
        'tok/s: {tok_per_sec:.0f} step_avg: {approx_training_time_ms / step:.2f}ms '
        'interval_step_ms: {_pgolf_interval_ms(approx_training_time_ms, step):.2f}"',
        "the training log line gets step_avg (cumulative train time / steps) and interval_step_ms (per step since "
        "the previous log line); the record logs only tok/s and train time in minutes",
    ),
    Patch(
        "warmup-cu-buckets-env",
        "warmup_cu_buckets = tuple(cu_bucket_size * i for i in range(1, 5))",
        "warmup_cu_buckets = _pgolf_warmup_cu_buckets(tuple(cu_bucket_size * i for i in range(1, 5)))",
        "PGOLF_WARMUP_CU_BUCKETS (comma list) replaces the four cu_seqlens lengths the warmup compiles (64..256; each "
        "is one more compile, twice with looping); unset keeps the record's",
    ),
)


def apply_patches(text: str, patches: tuple[Patch, ...] = PATCHES) -> str:
    """`text` with every patch applied; a ToolError naming the first patch whose anchor is not in `text` exactly once
    (all are counted in the original before anything is replaced; no new text holds another patch's anchor)."""
    for p in patches:
        count = text.count(p.old)
        if count != 1:
            raise ToolError(f"patch {p.name}: its anchor occurs {count} times in the record's script "
                            f"(expected exactly once): {p.old.strip().splitlines()[0]!r}")
    for p in patches:
        if any(q.old in p.new for q in patches if q is not p):
            raise ToolError(f"patch {p.name}: its new text holds an anchor")  # a mistake in PATCHES, not in input
        text = text.replace(p.old, p.new, 1)
    return text


# ----------------------------------------------------------------------------------------------------------- prepare

def _git(mirror: Path, *args: str) -> bytes:
    try:
        proc = subprocess.run(["git", "-C", str(mirror), *args], capture_output=True, timeout=120)
    except FileNotFoundError:
        raise ToolError("git is not installed") from None
    except subprocess.TimeoutExpired:
        raise ToolError(f"{mirror}: git {' '.join(args)} timed out") from None
    if proc.returncode != 0:
        msg = proc.stderr.decode("utf-8", "replace").strip().splitlines()
        raise ToolError(f"{mirror}: git {' '.join(args)} failed: {msg[-1] if msg else proc.returncode}")
    return proc.stdout


def _atomic_write(path: Path, data: bytes) -> None:
    from pgolf.fileio import atomic_write_bytes

    atomic_write_bytes(path, data)


def prepare(mirror: Path, out: Path, record: str = RECORD_DIR) -> dict:
    """Read the record's script and tokenizer from `mirror` at HEAD, patch, write them into `out`; returns the
    fields of SOURCE.txt."""
    if not mirror.is_dir():
        raise ToolError(f"{mirror}: mirror git directory does not exist")
    commit = _git(mirror, "rev-parse", "HEAD").decode().strip()
    listing = _git(mirror, "ls-tree", "-r", "--name-only", "HEAD", "--", f"{record}/").decode().splitlines()
    if f"{record}/{SCRIPT_NAME}" not in listing:
        raise ToolError(f"{mirror}: no {record}/{SCRIPT_NAME} at HEAD {commit[:12]}")
    models = [p for p in listing if p.endswith(".model")]
    if len(models) != 1:
        raise ToolError(f"{mirror}: expected one tokenizer .model under {record} at HEAD, found {len(models)}")
    original = _git(mirror, "show", f"HEAD:{record}/{SCRIPT_NAME}")
    try:
        text = original.decode("utf-8")
    except UnicodeDecodeError:
        raise ToolError(f"{record}/{SCRIPT_NAME}: not UTF-8 text") from None
    patched = apply_patches(text).encode("utf-8")
    model = _git(mirror, "show", f"HEAD:{models[0]}")
    model_name = Path(models[0]).name
    source = {
        "mirror": str(mirror), "commit": commit, "record": record, "script": f"{record}/{SCRIPT_NAME}",
        "tokenizer": models[0],
        "sha256_original": hashlib.sha256(original).hexdigest(), "sha256_patched": hashlib.sha256(patched).hexdigest(),
        "sha256_tokenizer": hashlib.sha256(model).hexdigest(), "patches": [p.name for p in PATCHES],
    }
    lines = [f"{k}: {v}" for k, v in source.items() if k != "patches"]
    lines.append("patches applied (each anchor matched exactly once), by benchmarks/record_script.py:")
    lines += [f"  {p.name}: {p.why}" for p in PATCHES]
    # Everything is in memory and patched before the first write; each file is renamed into place whole.
    _atomic_write(out / model_name, model)
    _atomic_write(out / SCRIPT_NAME, patched)
    _atomic_write(out / "SOURCE.txt", ("\n".join(lines) + "\n").encode("utf-8"))
    return source


# ------------------------------------------------------------------------------------------------- tokenizer reader

def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if pos >= len(buf) or shift > 63:
            raise ValueError("truncated varint")
        b = buf[pos]
        pos += 1
        value |= (b & 0x7F) << shift
        shift += 7
        if b < 0x80:
            return value, pos


def _fields(buf: bytes):
    """(field number, wire type, value) of one protobuf message: ints for varints, bytes otherwise."""
    pos = 0
    while pos < len(buf):
        key, pos = _varint(buf, pos)
        field, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _varint(buf, pos)
        elif wire == 1:
            value, pos = buf[pos:pos + 8], pos + 8
        elif wire == 2:
            n, pos = _varint(buf, pos)
            value, pos = buf[pos:pos + n], pos + n
        elif wire == 5:
            value, pos = buf[pos:pos + 4], pos + 4
        else:
            raise ValueError(f"unsupported wire type {wire}")
        if pos > len(buf):
            raise ValueError("truncated field")
        yield field, wire, value


# SentencePiece's ModelProto (sentencepiece_model.proto): pieces = 1 {piece = 1, score = 2, type = 3}, trainer_spec
# = 2 {bos_id = 41}. Piece types: NORMAL 1 (the default), UNKNOWN 2, CONTROL 3, USER_DEFINED 4, UNUSED 5, BYTE 6.
NORMAL, UNKNOWN, CONTROL, USER_DEFINED, UNUSED, BYTE = 1, 2, 3, 4, 5, 6


@dataclass
class Vocab:
    pieces: list[str]
    types: np.ndarray
    bos_id: int


def read_sentencepiece(path: Path) -> Vocab:
    """The pieces, piece types and BOS id of a SentencePiece .model file."""
    try:
        buf = path.read_bytes()
    except FileNotFoundError:
        raise ToolError(f"{path}: tokenizer model does not exist") from None
    except OSError as exc:
        raise ToolError(f"{path}: cannot read the tokenizer model: {exc.strerror or exc}") from None
    pieces, types, bos = [], [], 1
    try:
        for field, wire, value in _fields(buf):
            if field == 1 and wire == 2:
                piece, kind = "", NORMAL
                for f, w, v in _fields(value):
                    if f == 1 and w == 2:
                        piece = v.decode("utf-8")
                    elif f == 3 and w == 0:
                        kind = v
                pieces.append(piece)
                types.append(kind)
            elif field == 2 and wire == 2:
                for f, w, v in _fields(value):
                    if f == 41 and w == 0:
                        bos = v - (1 << 64) if v >= 1 << 63 else v
    except (ValueError, UnicodeDecodeError) as exc:
        raise ToolError(f"{path}: not a SentencePiece model ({exc})") from None
    if not pieces:
        raise ToolError(f"{path}: not a SentencePiece model (no pieces)")
    if not 0 <= bos < len(pieces) or types[bos] != CONTROL:
        raise ToolError(f"{path}: the tokenizer has no BOS control piece (bos_id {bos})")
    if len(pieces) > 65536:
        raise ToolError(f"{path}: {len(pieces)} pieces do not fit uint16 shards")
    return Vocab(pieces, np.array(types, dtype=np.int64), bos)


def original_bytes(vocab: Vocab) -> np.ndarray:
    """Per id, the original-text bytes a token of it stands for in the sidecar: the piece's UTF-8 length with the
    leading "\u2581" as one space, 1 for byte pieces, 0 for control and unknown pieces and the CaseOps operators
    (U+E001..E004). An approximation of the real sidecar (which follows the text's own case), enough for timing."""
    out = np.zeros(len(vocab.pieces), dtype=np.int64)
    for i, (piece, kind) in enumerate(zip(vocab.pieces, vocab.types)):
        if kind == BYTE:
            out[i] = 1
        elif kind in (NORMAL, USER_DEFINED):
            text = piece.replace("\u2581", " ")
            text = "".join(ch for ch in text if not "\ue001" <= ch <= "\ue004")
            out[i] = len(text.encode("utf-8"))
    return out


# ---------------------------------------------------------------------------------------------------------- shards

def _documents(rng: np.random.Generator, n: int, mean_doc: float) -> np.ndarray:
    """Start offsets of documents covering n tokens: log-normal lengths (sigma 1) of the given mean, 2..16,384."""
    sigma = 1.0
    mu = math.log(mean_doc) - sigma * sigma / 2
    lengths, total = [], 0
    while total < n:
        draw = rng.lognormal(mu, sigma, size=int((n - total) / mean_doc) + 64)
        draw = np.clip(np.rint(draw), 2, MAX_DOC_TOKENS).astype(np.int64)
        lengths.append(draw)
        total += int(draw.sum())
    ends = np.cumsum(np.concatenate(lengths))
    starts = np.concatenate([[0], ends[:-1]])
    return starts[starts < n]


def synthetic_stream(rng: np.random.Generator, n: int, vocab: Vocab, mean_doc: float) -> tuple[np.ndarray, int]:
    """n uint16 ids: documents each starting with BOS, the rest Zipf(1) over the non-control pieces in a random order.
    Returns (tokens, number of documents)."""
    text_ids = np.flatnonzero(~np.isin(vocab.types, (CONTROL, UNKNOWN, UNUSED)))
    if text_ids.size == 0:
        raise ToolError("the tokenizer has no text pieces")
    text_ids = rng.permutation(text_ids)
    cdf = np.cumsum(1.0 / (np.arange(text_ids.size) + 2.7))
    cdf /= cdf[-1]
    tokens = text_ids[np.minimum(np.searchsorted(cdf, rng.random(n), side="right"), text_ids.size - 1)]
    tokens = tokens.astype(np.uint16)
    starts = _documents(rng, n, mean_doc)
    tokens[starts] = vocab.bos_id
    return tokens, int(starts.size)


def micro_batch_segments(shards: list[np.ndarray], bos_id: int, world_size: int = 1) -> np.ndarray:
    """Attention segments per micro-batch of rank 0 over one pass of `shards`, as the record's packing loader cuts
    them: windows of MICRO_BATCH_TOKENS from each shard's first BOS, a step of (tokens + 1) x world_size, a segment
    from every BOS (and the window start) cut again every TRAIN_SEQ_LEN tokens."""
    span = MICRO_BATCH_TOKENS + 1
    counts = []
    for tokens in shards:
        bos = np.flatnonzero(tokens == bos_id)
        if bos.size == 0:
            continue
        cursor = int(bos[0])
        while cursor + span * world_size <= tokens.size:
            lo, hi = np.searchsorted(bos, [cursor, cursor + MICRO_BATCH_TOKENS])
            starts = bos[lo:hi] - cursor
            if starts.size == 0 or starts[0] != 0:
                starts = np.concatenate([[0], starts])
            ends = np.concatenate([starts[1:], [MICRO_BATCH_TOKENS]])
            counts.append(int(np.sum(-(-(ends - starts) // TRAIN_SEQ_LEN))))
            cursor += span * world_size
    return np.array(counts, dtype=np.int64)


def cu_buckets(segments: np.ndarray) -> list[int]:
    """The padded cu_seqlens lengths (segments + 1 rounded up to a multiple of 64) the record compiles for."""
    return sorted({int(-(-(s + 1) // CU_BUCKET) * CU_BUCKET) for s in segments.tolist()})


def write_shards(out: Path, tokenizer: Path, train_tokens: int, val_tokens: int, seed: int,
                 shard_tokens: int = 10_000_000, mean_doc: float = 950.0, force: bool = False) -> dict:
    from pgolf.data.caseops import SIDECAR_SPLIT
    from pgolf.data.shards import shard_name, write_shard

    if shard_tokens < MIN_TRAIN_SHARD:
        raise ToolError(f"--shard-tokens must be at least {MIN_TRAIN_SHARD:,} (one BOS and one 98,304-token "
                        f"micro-batch after it)")
    if train_tokens < MIN_TRAIN_SHARD:
        raise ToolError(f"--train-tokens must be at least {MIN_TRAIN_SHARD:,}")
    if val_tokens < MIN_VAL_TOKENS:
        raise ToolError(f"--val-tokens must be at least {MIN_VAL_TOKENS:,} (the record's eval needs one 2,048 window)")
    if not 2 <= mean_doc <= MAX_DOC_TOKENS:
        raise ToolError(f"--mean-doc must be in 2..{MAX_DOC_TOKENS}")
    vocab = read_sentencepiece(tokenizer)
    if out.exists() and not out.is_dir():
        raise ToolError(f"{out}: exists and is not a directory")
    old = sorted(out.glob("fineweb_*.bin")) if out.is_dir() else []
    if old and not force:
        raise ToolError(f"{out}: already holds {len(old)} fineweb_*.bin files (use an empty folder, or --force)")
    for path in old:
        path.unlink()
    rng = np.random.default_rng(seed)
    train, train_docs = synthetic_stream(rng, train_tokens, vocab, mean_doc)
    val, val_docs = synthetic_stream(rng, val_tokens, vocab, mean_doc)
    val_bytes = original_bytes(vocab)[val].astype(np.uint16)
    val_bytes[val == vocab.bos_id] = 0
    parts = np.array_split(train, max(1, train_tokens // shard_tokens))  # each part at least shard_tokens long
    files = []
    for i, part in enumerate(parts):
        write_shard(out / shard_name("train", i), part)
        files.append(shard_name("train", i))
    write_shard(out / shard_name("val", 0), val)
    write_shard(out / shard_name(SIDECAR_SPLIT, 0), val_bytes)
    files += [shard_name("val", 0), shard_name(SIDECAR_SPLIT, 0)]
    segments = micro_batch_segments(parts, vocab.bos_id)
    buckets = cu_buckets(segments)
    info = {
        "tokenizer": str(tokenizer), "vocab_size": len(vocab.pieces), "bos_id": vocab.bos_id, "seed": seed,
        "train_tokens": train_tokens, "train_docs": train_docs, "val_tokens": val_tokens, "val_docs": val_docs,
        "mean_doc_tokens": round((train_tokens + val_tokens) / (train_docs + val_docs), 1),
        "val_bytes": int(val_bytes.sum()), "files": files,
        "one_gpu_micro_batches_per_pass": int(segments.size),
        "segments_per_micro_batch": {"min": int(segments.min()), "mean": round(float(segments.mean()), 1),
                                     "max": int(segments.max())} if segments.size else None,
        "cu_buckets_1gpu": buckets,
    }
    from pgolf.fileio import atomic_write_text

    atomic_write_text(out / "record_shards.json", json.dumps(info, indent=2) + "\n")
    atomic_write_text(out / "cu_buckets_1gpu.txt", ",".join(map(str, buckets)) + "\n")
    return info


# --------------------------------------------------------------------------------------------------- check-imports

def _imports(tree: ast.Module):
    """(module, names, lineno, at module level) for every absolute import statement."""
    top = set(map(id, tree.body))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, [], node.lineno, id(node) in top
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            yield node.module, [a.name for a in node.names], node.lineno, id(node) in top


def check_imports(path: Path) -> int:
    try:
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    except FileNotFoundError:
        raise ToolError(f"{path}: does not exist") from None
    except SyntaxError as exc:
        raise ToolError(f"{path}: does not parse: line {exc.lineno}: {exc.msg}") from None
    failed_top = 0
    for module, names, lineno, top in sorted(_imports(tree), key=lambda item: item[2]):
        where = "module level" if top else "inside a function"
        try:
            mod = importlib.import_module(module)
            missing = [n for n in names if n != "*" and not hasattr(mod, n)
                       and importlib.util.find_spec(f"{module}.{n}") is None]
            problem = f"no name(s) {', '.join(missing)}" if missing else ""
        except Exception as exc:  # noqa: BLE001 - any import failure is the finding
            problem = f"{type(exc).__name__}: {exc}"
        label = f"{module}" + (f" ({', '.join(names)})" if names else "")
        if problem:
            failed_top += top
            print(f"{'FAIL' if top else 'warn'} line {lineno} {where}: {label}: {problem}")
        else:
            print(f"ok   line {lineno}: {label}")
    print(f"python {sys.version.split()[0]}; {failed_top} module-level import(s) failed")
    return 1 if failed_top else 0


# ------------------------------------------------------------------------------------------------------------- CLI

class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, exit 2
        print(f"{self.prog}: {message}", file=sys.stderr)
        sys.exit(2)


def _positive(text: str) -> int:
    try:
        value = int(text.replace("_", ""))
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be positive: {text!r}")
    return value


def build_parser() -> argparse.ArgumentParser:
    ap = _Parser(prog="record_script.py", description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True, parser_class=_Parser)
    p = sub.add_parser("prepare", help="patched record script + tokenizer + SOURCE.txt into --out")
    p.add_argument("--mirror", required=True, type=Path, help="git directory of a copy of openai/parameter-golf")
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--record", default=RECORD_DIR, help="the record's folder in that repository")
    s = sub.add_parser("shards", help="synthetic CaseOps-shaped shards for the record's loader")
    s.add_argument("--out", required=True, type=Path)
    s.add_argument("--tokenizer", required=True, type=Path, help="the SentencePiece .model (prepare copies it)")
    s.add_argument("--train-tokens", type=_positive, default=20_000_000)
    s.add_argument("--val-tokens", type=_positive, default=1_000_000)
    s.add_argument("--shard-tokens", type=_positive, default=10_000_000)
    s.add_argument("--mean-doc", type=float, default=950.0, help="mean document length in tokens")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--force", action="store_true", help="replace fineweb_*.bin files already in --out")
    c = sub.add_parser("check-imports", help="import every module FILE imports, with this Python")
    c.add_argument("file", type=Path)
    return ap


def _ensure_pgolf() -> None:
    try:
        import pgolf  # noqa: F401
    except ImportError:
        sys.path.insert(0, str(ROOT / "src"))


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    _ensure_pgolf()
    from pgolf.errors import PgolfError

    try:
        if args.cmd == "prepare":
            src = prepare(args.mirror, args.out, args.record)
            print(f"{args.out / SCRIPT_NAME}: {args.record}/{SCRIPT_NAME} at {src['commit'][:12]}, "
                  f"{len(src['patches'])} patches applied ({', '.join(src['patches'])})")
        elif args.cmd == "shards":
            info = write_shards(args.out, args.tokenizer, args.train_tokens, args.val_tokens, args.seed,
                                args.shard_tokens, args.mean_doc, args.force)
            print(json.dumps({k: v for k, v in info.items() if k != "files"}))
        else:
            return check_imports(args.file)
    except (ToolError, PgolfError) as exc:
        print(f"record_script.py: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"record_script.py: {exc.filename or ''}: {exc.strerror or exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
