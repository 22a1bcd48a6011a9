"""What a score was measured on: the val split's identity, and whether it is the official one (docs/integrity.md).

Scores of the challenge were compared across val sets that differed without anyone noticing: the CaseOps
preparation script's default of 10,000 val documents (official issue #2127; #1854 scored 17% of the split), and
token counts that differed by whether the tail was scored (47,851,520 against 47,853,343 targets). So every score
pgolf writes carries a `ValSplit`: documents, tokens, targets scored and how the tail was treated, bytes, the
tokenizer's SHA-256 and a SHA-256 of the token stream itself (the digest: two scores are comparable only when their
digests agree), plus the verdict of `official_verdict`: is this the full official split of a hosted export?

The official splits are the first 50,000 documents of the challenge's `docs_selected.jsonl`, tokenized by each
hosted export. What pgolf knows of each (`OFFICIAL_SPLITS`) comes from the records' logs, each figure with its
source; where a figure is known only to a range (the logs print the count truncated to a multiple of the context),
the range is what is checked, and where it is unknown (the digests: the Hub is not reachable from where pgolf is
developed) nothing is claimed.
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass

import numpy as np

OFFICIAL_VAL_DOCS = 50_000  # the official split: the first 50,000 documents of docs_selected.jsonl are val
TAIL_SCORED = "scored"  # pgolf scores the last partial window too (the official script drops it)


@dataclass(frozen=True)
class ValSplit:
    """The identity of the val tokens a score was computed on."""

    docs: int  # BOS tokens in the scored stream
    tokens: int  # tokens in the scored stream (targets = tokens - 1: the first token is context only)
    targets: int  # targets scored
    tail: str  # how the last partial window was treated (TAIL_SCORED, or "truncated: N targets dropped")
    bytes: int  # the BPB denominator: original UTF-8 bytes of the targets
    vocab_size: int
    tokenizer_sha256: str
    digest: str  # "sha256:<hex>" of the stream as little-endian uint16 (the shards' payload)
    full: bool  # the whole val split (false: only its first tokens, a quick look)
    caseops: bool  # bytes from the CaseOps sidecar (original text), not from the tokenizer's pieces

    def to_dict(self) -> dict:
        return asdict(self)


def short_digest(digest) -> str:
    """A digest's first 12 hex digits, for tables and one-line reports ("?" when there is none)."""
    return str(digest or "").split(":")[-1][:12] or "?"


def stream_digest(tokens: np.ndarray) -> str:
    """SHA-256 of a token stream as the shards store it (little-endian uint16): equal digests, equal streams."""
    data = np.ascontiguousarray(tokens, dtype="<u2")
    return "sha256:" + hashlib.sha256(memoryview(data).cast("B")).hexdigest()


def val_split(tokens: np.ndarray, target_bytes: np.ndarray, manifest: dict, *, full: bool) -> ValSplit:
    """The `ValSplit` of the stream `tokens` scored with per-target bytes `target_bytes`, from a data directory
    whose manifest is `manifest` (`full`: the whole split, not a prefix)."""
    tok = manifest["tokenizer"]
    bos = int(tok.get("bos_id", 1))
    return ValSplit(docs=int(np.count_nonzero(tokens == bos)), tokens=int(len(tokens)), targets=int(len(tokens) - 1),
                    tail=TAIL_SCORED, bytes=int(np.asarray(target_bytes, dtype=np.int64).sum()),
                    vocab_size=int(tok["vocab_size"]), tokenizer_sha256=str(tok["sha256"]),
                    digest=stream_digest(tokens), full=full, caseops=bool(manifest.get("caseops")))


@dataclass(frozen=True)
class OfficialSplit:
    """What the records' logs establish about one hosted export's val split (the docs are always 50,000)."""

    export: str  # pgolf's name (`pgolf data fineweb --variant`)
    vocab_size: int
    caseops: bool
    tokens: tuple[int, int]  # the stream's token count, lowest and highest possible (equal when known exactly)
    bytes: int | None  # the BPB denominator over all targets, when known
    tokenizer_sha256: str | None  # when the hosted tokenizer file is known
    source: str


OFFICIAL_SPLITS: tuple[OfficialSplit, ...] = (
    OfficialSplit("sp1024", 1024, False, (62_021_846, 62_021_846), 151_080_891,
                  "4f5e8adb109c66b4886963bc75a7befd73bda36d27fd7102df8e9e66503b0e2a",
                  "tokens_loaded=62021846, total_bytes=151080891 in full-tail evaluation logs of PRs to "
                  "openai/parameter-golf; 'val_tokens:62021633 (raw:62021846)'; tokenizer: data/tokenizers/"
                  "fineweb_1024_bpe.model of the official repository"),
    OfficialSplit("sp4096", 4096, False, (45_508_609, 45_516_800), None, None,
                  "usable val_tokens 45,508,608 (seq 2048) and 45,514,752 in the sp4096 records' logs (04-03, 04-04): "
                  "the exact count is not printed"),
    OfficialSplit("sp8192", 8192, False, (40_540_161, 40_542_208), None, None,
                  "usable val_tokens 40,540,160 at seq 2048 in every sp8192 record's log (04-05 onwards); "
                  "the n-gram tilt PRs' 'n_tok=40540161' is the same truncated stream"),
    OfficialSplit("sp8192-caseops", 8192, True, (47_853_344, 47_853_344), None,
                  "97754754561f20def5edd99765ca0668f880bd94e67316d54aa10ab25f45cc4d",
                  "'val_tokens: 47853343' targets with EVAL_INCLUDE_TAIL=1 (PR #2014's logs; 47,851,520 without "
                  "the tail, 1.0611 record); tokenizer: the 1.0611 record's tokenizers/ folder"),
)


@dataclass(frozen=True)
class Verdict:
    """Whether a `ValSplit` is the full official split of an export, and why (one line)."""

    official: bool
    export: str | None
    reason: str

    def to_dict(self) -> dict:
        return asdict(self)


def official_verdict(split: ValSplit) -> Verdict:
    """The full official val split of a hosted export: 50,000 documents, every target scored, and the token count,
    byte total and tokenizer that the records' logs establish for that export (`OFFICIAL_SPLITS`)."""
    candidates = [o for o in OFFICIAL_SPLITS if o.vocab_size == split.vocab_size and o.caseops == split.caseops]
    if not candidates:
        kind = "CaseOps " if split.caseops else ""
        return Verdict(False, None, f"no official export has a {kind}vocabulary of {split.vocab_size}")
    o = candidates[0]
    problems = []
    if not split.full:
        problems.append(f"only the first {split.tokens:,} tokens were scored")
    if split.docs != OFFICIAL_VAL_DOCS:
        problems.append(f"{split.docs:,} documents, the official split has {OFFICIAL_VAL_DOCS:,}")
    low, high = o.tokens
    if not low <= split.tokens <= high:
        expected = f"{low:,}" if low == high else f"{low:,} to {high:,}"
        problems.append(f"{split.tokens:,} tokens, the official split has {expected}")
    if split.targets != split.tokens - 1 or split.tail != TAIL_SCORED:
        problems.append(f"{split.targets:,} targets scored of {split.tokens - 1:,} ({split.tail})")
    if o.bytes is not None and split.full and split.bytes != o.bytes:
        problems.append(f"{split.bytes:,} bytes, the official split has {o.bytes:,}")
    if o.tokenizer_sha256 is not None and split.tokenizer_sha256 != o.tokenizer_sha256:
        problems.append(f"tokenizer sha256 {split.tokenizer_sha256[:12]}, the official {o.export} tokenizer's is "
                        f"{o.tokenizer_sha256[:12]}")
    if problems:
        return Verdict(False, o.export, f"not the official {o.export} val split: " + "; ".join(problems))
    known = "tokens" + (", bytes" if o.bytes is not None else "") + (", tokenizer" if o.tokenizer_sha256 else "")
    return Verdict(True, o.export, f"the official {o.export} val split ({OFFICIAL_VAL_DOCS:,} documents, "
                                   f"{split.tokens:,} tokens, every target scored; {known} as the records' logs)")


def _count(value) -> str:
    return f"{value:,}" if isinstance(value, int) else "?"


def describe(split: dict) -> str:
    """One line for reports from a `ValSplit.to_dict()` with its `verdict` (`Verdict.to_dict()`)."""
    verdict = split.get("verdict") or {}
    digest = short_digest(split.get("digest"))
    scope = "" if split.get("full", True) else ", first tokens only"
    return (f"val split: {_count(split.get('docs'))} docs, {_count(split.get('tokens'))} tokens "
            f"(tail {split.get('tail', '?')}{scope}), {_count(split.get('bytes'))} bytes, tokenizer "
            f"{str(split.get('tokenizer_sha256', '?'))[:12]}, digest {digest}; "
            + ("official" if verdict.get("official") else "NOT official") + f": {verdict.get('reason', '?')}")
