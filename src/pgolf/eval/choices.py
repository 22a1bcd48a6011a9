"""The `[ttt]` section's named choices and option strings, importable without torch: which scored documents a
global phase trains on (`ttt.phase_docs`), the adapter targets (`ttt.targets`) and the short-document chunk rules
(`ttt.short_doc_chunks`, with `batch_chunk`, the chunk size they give a batch). The eval modes' names are in
`pgolf.eval.names`.

`pgolf.options` checks a config with them before anything imports torch (`pgolf config show`, a mistyped `--set`:
well under a second); `ttt_lora`, which runs them, imports them from here, so a config is checked by the code that
runs it.
"""

from __future__ import annotations

from pgolf.errors import PgolfError
from pgolf.model.choices import LORA_TARGETS

PHASE_DOCS = ("scored-order", "batch-index")  # `ttt.phase_docs`: which scored documents a global phase trains on
LEGACY_TARGETS = {"attn.c_q": "q", "attn.c_k": "k", "attn.c_v": "v", "attn.proj": "o"}  # earlier linear-layer names


def lora_targets(text: str) -> tuple[str, ...]:
    """`ttt.targets` ("q,v,head") as a tuple of `pgolf.model.lora.LORA_TARGETS`, refused with one line if a name is
    unknown (the earlier linear-layer names `attn.c_q`... still read)."""
    targets = tuple(LEGACY_TARGETS.get(t.strip(), t.strip()) for t in text.split(",") if t.strip())
    if not targets or set(targets) - set(LORA_TARGETS):
        raise PgolfError(f"config: ttt.targets={text!r} must name some of {', '.join(LORA_TARGETS)}")
    return targets


def short_doc_chunks(text: str) -> tuple[tuple[int, int], ...]:
    """`ttt.short_doc_chunks` ("256:8,2000:24") as ((LENGTH, CHUNK), ...) sorted by LENGTH, as PR #2014's
    `_parse_short_score_first_steps` (in `eval_val_ttt_phased`) reads TTT_SHORT_SCORE_FIRST_STEPS; empty entries
    skipped, anything but pairs of positive integers refused with one line."""
    rules = []
    for part in filter(None, (p.strip() for p in str(text).split(","))):
        length, sep, chunk = part.partition(":")
        try:
            rule = (int(length), int(chunk)) if sep else (0, 0)
        except ValueError:
            rule = (0, 0)
        if min(rule) < 1:
            raise PgolfError(f"config: ttt.short_doc_chunks={text!r} must be LENGTH:CHUNK pairs of positive "
                             "integers, e.g. '256:8,2000:24'")
        rules.append(rule)
    return tuple(sorted(rules, key=lambda r: r[0]))


def batch_chunk(longest: int, rules: tuple[tuple[int, int], ...], chunk: int) -> int:
    """The chunk size of a whole batch whose longest document has `longest` targets: the CHUNK of the first rule
    (by increasing LENGTH) with longest + 1 <= LENGTH, else `chunk`. As PR #2014's `_score_first_chunk_for_doc(
    max_doc_len)`: one size per batch, from its longest document, counted in tokens with its BOS (`_find_docs`'
    doc_len = targets + 1), so "256:8" means fewer than 256 targets."""
    for length, size in rules:
        if longest + 1 <= length:
            return size
    return chunk
