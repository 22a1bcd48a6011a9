"""Scoring: totals of an evaluation mode over a token stream, and `score_artifact`, which reads only the artifact,
the tokenizer and the val shards.

The modes (`flat`, `sliding`, `doc`; `pgolf.eval.modes`) yield scored chunks; this module sums their nats and
bytes in float64/int64 on the device, all-reduces the sums across ranks (each rank scores its share of the
windows), and checks that every target tokens[1:] was scored exactly once (count and position checksum) and that
the byte total equals the manifest's. Unlike the official script, which drops the last partial window, the final
short window is scored too. Scoring time can be capped (`eval.max_seconds`): every rank stops once over budget and
all ranks then fail together with one PgolfError.
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from pgolf.errors import PgolfError
from pgolf.eval.bpb import bpb_from_sums
from pgolf.eval.modes import EvalMode, FlatMode, ScoredChunk, make_mode  # noqa: F401  (re-exported)
from pgolf.eval.names import EVAL_MODES  # noqa: F401  (re-exported: every mode `score_stream` runs)
from pgolf.progress import progress_bar
from pgolf.eval.tilt import with_tilt
from pgolf.eval.windows import sliding_plan
from pgolf.runtime import COMPILE_MODES, DistContext, PhaseClock


@dataclass
class EvalResult:
    """Totals of one scored stream."""

    val_loss: float
    val_bpb: float
    nats: float
    tokens: int
    bytes: int
    seconds: float
    report: dict = field(default_factory=dict)  # what the mode says about its run (TTT: batches, phases, times)

    def to_dict(self) -> dict:
        return asdict(self)


class _Totals:
    """Device-side running sums of scored chunks (no host sync per batch)."""

    def __init__(self, target_bytes: np.ndarray, device: torch.device) -> None:
        self.bytes_of_target = torch.from_numpy(np.asarray(target_bytes, dtype=np.int64)).to(device)
        self.nats = torch.zeros((), dtype=torch.float64, device=device)
        self.counts = torch.zeros(3, dtype=torch.int64, device=device)  # scored, bytes, sum of positions

    def add(self, chunk: ScoredChunk) -> None:
        m = chunk.mask
        self.nats += torch.where(m, chunk.nats.double(), 0.0).sum()
        pos = torch.where(m, chunk.positions, 0)
        self.counts[0] += m.sum()
        self.counts[1] += torch.where(m, self.bytes_of_target[(pos - 1).clamp(min=0)], 0).sum()
        self.counts[2] += pos.sum()


def flat_windows(n_targets: int, seq_len: int, rank: int = 0, world_size: int = 1) -> tuple[int, int]:
    """The contiguous range [first, last) of flat window indices that `rank` scores (window i covers targets
    i*seq_len+1 .. min((i+1)*seq_len, n_targets))."""
    n_windows = math.ceil(n_targets / seq_len)
    return n_windows * rank // world_size, n_windows * (rank + 1) // world_size


@torch.no_grad()
def score_windows(model: torch.nn.Module, tokens: np.ndarray, target_bytes: np.ndarray, first: int, last: int, *,
                  seq_len: int, per_batch: int, device: torch.device) -> tuple[torch.Tensor, int, int]:
    """Sum of nats (float64 tensor), scored targets and their bytes over flat windows [first, last)."""
    n_targets = len(tokens) - 1
    plan = sliding_plan(np.array([0]), np.array([n_targets]), seq_len, seq_len).take(slice(first, last))
    totals = _Totals(target_bytes, device)
    for chunk in FlatMode(seq_len).run_plan(model, tokens, plan, device=device, batch_tokens=per_batch * seq_len):
        totals.add(chunk)
    return totals.nats, int(totals.counts[0]), int(totals.counts[1])


def score_stream(model: torch.nn.Module, tokens: np.ndarray, target_bytes: np.ndarray, mode: EvalMode, *,
                 batch_tokens: int, device: torch.device, ctx: DistContext | None = None,
                 max_seconds: float = 0.0, progress: bool = False) -> EvalResult:
    """Score every target tokens[1:] exactly once with `mode`, split across ranks; `batch_tokens` is global.
    `progress`: report scored tokens on stderr (rank 0; a bar on a terminal, periodic lines elsewhere,
    `pgolf.progress`; it reads each chunk's count, a device sync).

    `target_bytes[i]` is the byte count charged to target tokens[i+1] (from `pgolf.data.bytes.token_bytes`).
    `max_seconds` > 0 caps the scoring time (PgolfError on every rank when any rank exceeds it).
    """
    start = time.perf_counter()
    n_targets = len(tokens) - 1
    if n_targets <= 0:
        raise PgolfError("evaluation stream has fewer than 2 tokens")
    if len(target_bytes) != n_targets:
        raise PgolfError(f"internal: {len(target_bytes)} byte counts for {n_targets} targets")
    rank, world = (ctx.rank, ctx.world_size) if ctx else (0, 1)
    totals = _Totals(target_bytes, device)
    report_progress = progress and rank == 0
    bar = progress_bar(n_targets if world == 1 else None, f"scoring {mode.name}", "tok", enabled=report_progress)
    over_budget = False
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            for chunk in mode.run(model, tokens, device=device, batch_tokens=max(1, batch_tokens // world),
                                  rank=rank, world_size=world):
                totals.add(chunk)
                if report_progress:  # counting the chunk's targets syncs the device: only when reported
                    bar.update(int(chunk.mask.sum()))
                if max_seconds > 0 and time.perf_counter() - start > max_seconds:
                    over_budget = True
                    break
    finally:
        model.train(was_training)
        bar.close()
    elapsed = torch.tensor([time.perf_counter() - start, float(over_budget)], dtype=torch.float64, device=device)
    if ctx is not None:
        ctx.all_reduce_max(elapsed)
        ctx.all_reduce_sum(totals.nats)
        ctx.all_reduce_sum(totals.counts)
    if elapsed[1].item() > 0:
        raise PgolfError(f"eval: {mode.describe()} scoring exceeded the eval time budget of {max_seconds:g} s "
                         f"(stopped after {elapsed[0].item():.1f} s); raise eval.max_seconds / --max-seconds or "
                         "use a cheaper mode")
    scored, num_bytes, position_sum = (int(v) for v in totals.counts.tolist())
    if scored != n_targets or position_sum != n_targets * (n_targets + 1) // 2:
        raise PgolfError(f"internal: {mode.describe()} scored {scored} of {n_targets} targets "
                         f"(position checksum {position_sum}, expected {n_targets * (n_targets + 1) // 2})")
    total_nats = float(totals.nats.item())
    val_loss, val_bpb = bpb_from_sums(total_nats, scored, num_bytes)
    report = dict(getattr(mode, "report", {}))
    no_op = mode.no_op()
    if no_op:
        report["no_op"] = no_op
    return EvalResult(val_loss, val_bpb, total_nats, scored, num_bytes, time.perf_counter() - start, report)


def score_flat(model: torch.nn.Module, tokens: np.ndarray, target_bytes: np.ndarray, *, seq_len: int,
               batch_tokens: int, device: torch.device, ctx: DistContext | None = None) -> EvalResult:
    """Flat mode: every target once with non-overlapping windows of `seq_len`, split across ranks."""
    return score_stream(model, tokens, target_bytes, FlatMode(seq_len), batch_tokens=batch_tokens, device=device,
                        ctx=ctx)


def build_mode(name: str, *, seq_len: int, stride: int = 0, bos_id: int = 1, ttt=None,
               compile: str = "off") -> EvalMode:
    """Any mode of `pgolf.eval.names.EVAL_MODES` (TTT modes take `ttt`, the `[ttt]` section `TTTConfig`; its
    defaults otherwise); windowed modes in their `prepare`, and the LoRA TTT modes, follow `compile`
    (`eval.compile`)."""
    from pgolf.config import TTTConfig
    from pgolf.eval.modes import WindowedMode
    from pgolf.eval.ttt import ttt_factories

    mode = make_mode(name, seq_len=seq_len, stride=stride, bos_id=bos_id,
                     extra=ttt_factories(ttt or TTTConfig(), compile))
    if isinstance(mode, WindowedMode) and not mode.adaptive:  # adaptive modes compile what they train, if anything
        mode.compile = compile
    return mode


class ValidationData:
    """The val stream, its per-target byte counts and the manifest totals they must match."""

    def __init__(self, data_dir: str | Path, expected_vocab: int | None = None, max_tokens: int = 0) -> None:
        from pgolf.data.bytes import byte_tables, token_bytes
        from pgolf.data.loader import load_split
        from pgolf.data.manifest import check_data_dir, val_target_bytes
        from pgolf.data.tokenizer import load_tokenizer

        self.manifest, self.tokenizer_path = check_data_dir(data_dir, expected_vocab=expected_vocab)
        vocab = expected_vocab or int(self.manifest["tokenizer"]["vocab_size"])
        tables = byte_tables(load_tokenizer(self.tokenizer_path), vocab)
        tokens = load_split(data_dir, "val")
        self.full = not (0 < max_tokens < len(tokens))
        self.tokens = tokens if self.full else tokens[:max_tokens]
        try:
            sidecar = val_target_bytes(data_dir, self.tokens)  # CaseOps: BPB on the original bytes
            self.target_bytes = sidecar if sidecar is not None else token_bytes(self.tokens, tables)
        except PgolfError as exc:
            raise PgolfError(f"{data_dir}: val shards: {exc}") from None
        if self.full:
            expected = int(self.manifest["splits"]["val"]["bytes"])
            if int(self.target_bytes.sum()) != expected:
                raise PgolfError(f"{data_dir}: val bytes {int(self.target_bytes.sum())} disagree with the manifest's "
                                 f"{expected}; the data directory is inconsistent")

    @property
    def bos_id(self) -> int:
        return int(self.manifest["tokenizer"].get("bos_id", 1))

    def split_record(self) -> dict:
        """What these tokens are (`pgolf.data.val_split`): counts, bytes, tokenizer, digest, and whether they are the
        full official split of a hosted export (`verdict`). Hashes the stream once (~0.2 s per 100 MB)."""
        from pgolf.data.val_split import official_verdict, val_split

        if not hasattr(self, "_split_record"):
            split = val_split(self.tokens, self.target_bytes, self.manifest, full=self.full)
            self._split_record = split.to_dict() | {"verdict": official_verdict(split).to_dict()}
        return self._split_record

    def score(self, model: torch.nn.Module, *, seq_len: int, batch_tokens: int, device: torch.device,
              ctx: DistContext | None = None, mode: str = "flat", stride: int = 0,
              max_seconds: float = 0.0, ttt=None, log: Callable[[str], None] | None = None,
              scorer: EvalMode | None = None, progress: bool = False) -> EvalResult:
        """Score the stream with the named mode (`pgolf.eval.names.EVAL_MODES`); stride 0 = the mode's default;
        `ttt` (the `[ttt]` section) configures the test-time-training modes, which report progress to `log`;
        `scorer`, when given, is the mode already built (and prepared)."""
        scorer = scorer or build_mode(mode, seq_len=seq_len, stride=stride, bos_id=self.bos_id, ttt=ttt)
        if log is not None and hasattr(scorer, "log"):
            scorer.log = log
        result = score_stream(model, self.tokens, self.target_bytes, scorer, batch_tokens=batch_tokens,
                              device=device, ctx=ctx, max_seconds=max_seconds, progress=progress)
        if self.full and result.bytes != int(self.manifest["splits"]["val"]["bytes"]):
            raise PgolfError(f"internal: {scorer.describe()} charged {result.bytes} bytes, the manifest says "
                             f"{self.manifest['splits']['val']['bytes']}")
        return result


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


CPU_FINAL_TOKENS = 131_072  # eval.max_tokens=-1 on CPU: covers the demo (66,244) and 50-document CaseOps splits


def final_score_tokens(max_tokens: int, device: torch.device) -> int:
    """The `max_tokens` of a run's final score for `eval.max_tokens` (0 = the whole split): -1 is the whole split on
    CUDA and at most CPU_FINAL_TOKENS on CPU, where scoring the official 47-62M tokens would take hours."""
    if max_tokens == -1:
        return 0 if device.type == "cuda" else CPU_FINAL_TOKENS
    return max_tokens


SCORING_SECTIONS = ("eval", "ttt")  # what may change when an artifact is scored (the model is the artifact's)


def apply_eval_overrides(cfg, overrides: list[str]) -> None:
    """`--set eval.FIELD=VALUE` or `ttt.FIELD=VALUE` at scoring time (`SCORING_SECTIONS`)."""
    from pgolf.config_sources import apply_overrides

    apply_overrides(cfg, overrides, sections=SCORING_SECTIONS,
                    refusal="only eval.* and ttt.* settings can change when scoring an artifact")


def score_artifact(artifact_path: str | Path, data_dir: str | Path, *, mode: str = "", seq_len: int = 0,
                   batch_tokens: int = 0, device: torch.device | None = None, ctx: DistContext | None = None,
                   clock: PhaseClock | None = None, code_bytes: int | None = None,
                   enforce_cap: bool = True, stride: int = 0, max_seconds: float | None = None,
                   max_tokens: int = 0, overrides: list[str] | None = None, report_modes: list[str] | None = None,
                   log: Callable[[str], None] | None = None, progress: bool = False) -> dict:
    """Score an artifact file: decompress, rebuild the model, score the val split. Reads nothing else.

    `mode`, `seq_len`, `stride`, `batch_tokens` and `max_seconds` default to the artifact's `eval` config (seq_len
    then to its training length). `enforce_cap` refuses an artifact whose bytes plus code bytes exceed the cap (the
    trainer scores over-cap runs anyway so that result.json can record them, then exits non-zero). `max_tokens` > 0
    scores only the first N val tokens (a quick look, not a score: `full_val` is then false and the manifest byte
    check is skipped). `report_modes` are scored first, each on a fresh copy of the artifact's model (phase
    `scoring_MODE`); the final `mode` is scored last (phase `scoring`). Returns a dict with the final mode's val_loss
    and val_bpb, tokens, bytes, artifact bytes, the phase times, and `evals`: every mode's label (the records' log
    names, `pgolf.eval.names.REPORT_LABELS`), score and time. `progress`: a progress bar per scored mode (stderr).
    """
    from pgolf.artifact.format import check_cap, load_artifact
    from pgolf.eval.names import report_label

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
    apply_eval_overrides(cfg, overrides or [])
    if cfg.eval.compile not in COMPILE_MODES:  # an artifact's config is not `check_options`ed (pgolf.options)
        raise PgolfError(f"config: eval.compile={cfg.eval.compile!r} must be one of {', '.join(COMPILE_MODES)}")
    with clock.phase("val_load"):
        val = ValidationData(data_dir, expected_vocab=cfg.model.vocab_size, max_tokens=max_tokens)
    sha = artifact.tokenizer.get("sha256")
    if sha and sha != val.manifest["tokenizer"]["sha256"]:
        raise PgolfError(f"{artifact_path}: tokenizer mismatch: the artifact was trained with "
                         f"{artifact.tokenizer.get('file')} (sha256 {sha[:12]}) but {data_dir} uses "
                         f"{val.manifest['tokenizer']['file']} (sha256 {val.manifest['tokenizer']['sha256'][:12]})")
    mode = mode or cfg.eval.mode
    seq_len = seq_len or cfg.eval.seq_len or cfg.train.train_seq_len
    stride = stride or cfg.eval.stride
    batch_tokens = batch_tokens or cfg.eval.batch_tokens
    max_seconds = cfg.eval.max_seconds if max_seconds is None else max_seconds
    evals = []
    for name in [*(m for m in report_modes or [] if m != mode), mode]:
        final = name == mode
        scorer = build_mode(name, seq_len=seq_len, stride=stride, bos_id=val.bos_id, ttt=cfg.ttt,
                            compile=cfg.eval.compile)
        if final:  # the n-gram tilt (eval.ngram_order) changes the final score only; report modes show the model's
            scorer = with_tilt(scorer, cfg.eval)
        scored_model = model if final or not scorer.adaptive else copy.deepcopy(model)
        world = ctx.world_size if ctx is not None else 1
        seconds = scorer.prepare(scored_model, device, batch_tokens=max(1, batch_tokens // world))
        if seconds:  # the compile warm-up on random tokens, outside the eval time (as the record's)
            clock.add(f"compile_{name}", seconds)
            if log is not None and (ctx is None or ctx.is_main):
                log(f"{name}: compile warmup done ({seconds:.1f}s, random tokens, no val data)")
        with clock.phase("scoring" if final else f"scoring_{name}"):
            result = val.score(scored_model, seq_len=seq_len, batch_tokens=batch_tokens, device=device, ctx=ctx,
                               mode=name, stride=stride, max_seconds=max_seconds, ttt=cfg.ttt, log=log, scorer=scorer,
                               progress=progress)
        entry = {"mode": name, "label": report_label(name), "val_loss": result.val_loss, "val_bpb": result.val_bpb,
                 "eval_time_ms": round(1000 * result.seconds, 1), "final": final, "detail": scorer.describe()}
        if result.report:
            entry["report"] = result.report
        evals.append(entry)
        if result.report.get("no_op"):
            entry["no_op"] = result.report["no_op"]
        if log is not None and (ctx is None or ctx.is_main):
            log(f"{entry['label']} val_loss:{result.val_loss:.8f} val_bpb:{result.val_bpb:.8f} "
                f"eval_time:{entry['eval_time_ms']:.0f}ms" + (f" WARNING: {entry['no_op']}" if "no_op" in entry else ""))
    out = {
        "mode": mode,
        "val_loss": result.val_loss,
        "val_bpb": result.val_bpb,
        "val_tokens": result.tokens,
        "val_bytes": result.bytes,
        "val_split": val.split_record(),
        "seq_len": seq_len,
        "artifact": Path(artifact_path).name,
        "artifact_bytes": artifact.file_bytes,
        "code_bytes": code,
        "total_bytes": total,
        "phases": clock.as_dict(),
        "final_eval": evals[-1]["label"],
        "evals": evals,
    }
    if "no_op" in evals[-1]:
        out["no_op"] = evals[-1]["no_op"]
    if mode != "flat":
        out["stride"] = getattr(scorer, "stride", 0)
        out["mode_detail"] = scorer.describe()
    if not val.full:
        out["full_val"] = False
    return out
