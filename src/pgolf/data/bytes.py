"""THE byte-accounting rule for bits per byte (docs/rules.md#bits-per-byte), shared by the manifest builder and the
evaluator.

Each target token y after previous token x is charged
    base_bytes[y] + (has_leading_space[y] and not is_boundary[x])
where base_bytes is the UTF-8 length of the piece without one leading "▁" (byte-fallback pieces `<0xNN>` count 1,
control/unknown/unused pieces and ids beyond the tokenizer count 0), and the "▁" space costs one byte except right
after a boundary (BOS or another control token). With the official settings (nmt_nfkc, add_dummy_prefix False)
SentencePiece's decode drops a "▁" at the very start of the decoded ids, which is exactly the after-BOS case, so the
bytes charged to a document equal the UTF-8 length of its decoded (normalized) text; tests check this on every shared
document for every shipped tokenizer.

A tokenizer without a standalone "▁" piece is refused: a lone space would then be spelled with byte-fallback
tokens and the sum would stop matching the text (official issue #897 measured ~20% too-low BPB this way).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pgolf.errors import PgolfError

SPACE = "\u2581"
_CHUNK = 1 << 22


@dataclass(frozen=True)
class ByteTables:
    """Per-id lookup tables of the byte rule."""

    base_bytes: np.ndarray
    has_leading_space: np.ndarray
    is_boundary: np.ndarray

    @property
    def vocab_size(self) -> int:
        return len(self.base_bytes)


def byte_tables(sp, vocab_size: int | None = None) -> ByteTables:
    """Build the tables for a SentencePiece model over max(its vocab, `vocab_size`) ids."""
    n_sp = sp.get_piece_size()
    if sp.piece_to_id(SPACE) == sp.unk_id() or sp.id_to_piece(sp.piece_to_id(SPACE)) != SPACE:
        raise PgolfError("tokenizer has no standalone '\u2581' piece, so BPB byte accounting would miscount spaces "
                         "(official issue #897); retrain it (pgolf's official settings keep the piece)")
    n = max(n_sp, vocab_size or 0)
    base = np.zeros(n, dtype=np.int16)
    lead = np.zeros(n, dtype=bool)
    boundary = np.ones(n, dtype=bool)
    for i in range(n_sp):
        if sp.is_control(i) or sp.is_unknown(i) or sp.is_unused(i):
            continue
        boundary[i] = False
        if sp.is_byte(i):
            base[i] = 1
            continue
        piece = sp.id_to_piece(i)
        if piece.startswith(SPACE):
            lead[i] = True
            piece = piece[1:]
        base[i] = len(piece.encode("utf-8"))
    return ByteTables(base, lead, boundary)


def token_bytes(tokens: np.ndarray, tables: ByteTables) -> np.ndarray:
    """Bytes charged to each target tokens[i] (i >= 1) given tokens[i-1]; length len(tokens) - 1."""
    n = len(tokens)
    out = np.zeros(max(n - 1, 0), dtype=np.int64)
    if n > 1 and int(np.max(tokens)) >= tables.vocab_size:
        raise PgolfError(f"token id {int(np.max(tokens))} is outside the tokenizer's {tables.vocab_size} ids")
    for start in range(1, n, _CHUNK):
        end = min(n, start + _CHUNK)
        y = np.asarray(tokens[start:end], dtype=np.int64)
        x = np.asarray(tokens[start - 1:end - 1], dtype=np.int64)
        out[start - 1:end - 1] = tables.base_bytes[y] + (tables.has_leading_space[y] & ~tables.is_boundary[x])
    return out


def stream_bytes(tokens: np.ndarray, tables: ByteTables) -> int:
    """Total bytes of a token stream (every token but the first), chunked for large memory maps."""
    total = 0
    for start in range(1, len(tokens), _CHUNK):
        end = min(len(tokens), start + _CHUNK)
        total += int(token_bytes(tokens[start - 1:end], tables).sum())
    return total
