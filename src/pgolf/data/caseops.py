"""CaseOps: a lossless case transform, its tokenizer symbols, and the original-byte sidecar that BPB is charged on.

Idea from the challenge's CaseOps records (PR #1729, "lossless_caps v2"; docs/techniques.md#caseops,
docs/rules.md#shard-format, docs/rules.md#bits-per-byte): fold ASCII
case into four reserved operator characters so that "The", "THE" and "the" share one lowercase piece, and charge BPB
on the bytes of the ORIGINAL text through a per-token sidecar instead of the piece-length rule. This implementation is
written from that description. Over each maximal run of ASCII letters:

- all lowercase: unchanged;
- TitleCase (one capital first, including a lone capital "A"): TITLE + lowercase;
- all capitals, length >= 2: ALLCAPS + lowercase;
- anything else (mixed): TITLE if the first letter is a capital, then CAPNEXT before every later capital, lowercase.

An operator character already present in the text is escaped as ESC + that character. The code points are the ones
the official SentencePiece model `fineweb_8192_bpe_lossless_caps_caseops_v1_reserved.model` reserves as
user-defined pieces (ids 4..7), so pgolf's transform and shards are compatible with that tokenizer.

Sidecar rule: every byte of the transformed text weighs one original byte, except the three bytes of each operator
the transform inserted (case operators and ESC), which weigh zero; an escaped literal operator keeps its three.
Each token is charged the weight of the bytes SentencePiece aligns to it (its `begin`/`end` offsets into the input);
bytes no piece covers (whitespace the normalizer dropped) go to the next token that carries text, or the last one at
the end of a document; the byte-fallback pieces of one character share that character's weight evenly. Inserted
operators and BOS are charged zero (a document with no text-carrying token at all, e.g. only whitespace, charges its
bytes to its BOS so that totals stay exact). The sum over a document is therefore exactly its original UTF-8 length.
"""

from __future__ import annotations

import re
from typing import Sequence

import numpy as np

from pgolf.errors import PgolfError

TITLE = "\ue001"
ALLCAPS = "\ue002"
CAPNEXT = "\ue003"
ESC = "\ue004"
OPERATORS: tuple[str, str, str, str] = (TITLE, ALLCAPS, CAPNEXT, ESC)
SIDECAR_SPLIT = "val_bytes"  # sidecar files are fineweb_val_bytes_NNNNNN.bin, in the shard format
_MAX_COUNT = 65_535  # sidecar entries are uint16 like shard tokens

_OPERATOR_RE = re.compile("[\ue001-\ue004]")
_DECODE_RE = re.compile("\ue004([\\s\\S]?)|\ue002([a-z]*)|[\ue001\ue003]([a-z]?)")
_OPERATOR_BYTES_RE = re.compile(b"\xee\x80[\x81-\x84]")  # UTF-8 of U+E001..U+E004
_ESC_BYTES = ESC.encode("utf-8")
_CAPITAL_RUN_SPLIT = re.compile("([A-Z][A-Za-z]*)")  # a capital to the end of its ASCII-letter run
_ASCII_LETTERS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")
_CACHE_LIMIT = 1 << 17
_word_cache: dict[str, str] = {}  # encodings of runs that start at a capital (most repeat: "The", "NASA")


def _encode_run_tail(word: str, mid_run: bool) -> str:
    """Encode `word`, the part of a letter run from its first capital to its end. `mid_run`: lowercase letters
    precede it in the run (they are unchanged, and the run is mixed case)."""
    lower = word.lower()
    if not mid_run:
        if len(word) >= 2 and word.isupper():
            return ALLCAPS + lower
        if len(word) == 1 or word[1:].islower():
            return TITLE + lower
    out = [CAPNEXT if mid_run else TITLE, lower[0]]
    for ch, low in zip(word[1:], lower[1:]):
        if ch != low:
            out.append(CAPNEXT)
        out.append(low)
    return "".join(out)


def _encode_head_word(word: str) -> str:
    encoded = _word_cache.get(word)
    if encoded is None:
        if len(_word_cache) >= _CACHE_LIMIT:
            _word_cache.clear()
        encoded = _word_cache[word] = _encode_run_tail(word, False)
    return encoded


def encode_caseops(text: str) -> str:
    """The CaseOps transform of `text` (see the module docstring); `decode_caseops` inverts it exactly."""
    if _OPERATOR_RE.search(text):
        text = _OPERATOR_RE.sub(lambda m: ESC + m.group(), text)
    parts = _CAPITAL_RUN_SPLIT.split(text)  # [text, run, text, run, ..., text]; runs are never adjacent
    if len(parts) == 1:
        return text
    words = parts[1::2]
    encoded = list(map(_word_cache.get, words))
    for i, before in enumerate(parts[0:-1:2]):
        if before[-1:] in _ASCII_LETTERS:  # the run began with lowercase letters: mixed case
            encoded[i] = _encode_run_tail(words[i], True)
        elif encoded[i] is None:
            encoded[i] = _encode_head_word(words[i])
    parts[1::2] = encoded
    return "".join(parts)


def _decode_op(match: re.Match) -> str:
    literal, caps, single = match.groups()
    if literal is not None:
        return literal
    if caps is not None:
        return caps.upper()
    return single.upper()


_SINGLE_CAP_SPLIT = re.compile("([\ue001\ue003][a-z]?)")
_SINGLE_CAPS = {op + ch: ch.upper() for op in (TITLE, CAPNEXT) for ch in ["", *"abcdefghijklmnopqrstuvwxyz"]}
_ALLCAPS_RE = re.compile("\ue002([a-z]*)")


def decode_caseops(text: str) -> str:
    """Inverse of `encode_caseops`. Lenient on text it did not produce (e.g. model samples): an operator with nothing
    to act on is dropped."""
    if not _OPERATOR_RE.search(text):
        return text
    if ESC in text:
        return _DECODE_RE.sub(_decode_op, text)
    # no escapes: every operator is a real one; the frequent TITLE/CAPNEXT + letter go through a table
    if ALLCAPS in text:
        text = _ALLCAPS_RE.sub(lambda m: m.group(1).upper(), text)
    parts = _SINGLE_CAP_SPLIT.split(text)
    parts[1::2] = map(_SINGLE_CAPS.__getitem__, parts[1::2])
    return "".join(parts)


def original_byte_weights(transformed: str) -> np.ndarray:
    """Per UTF-8 byte of a transformed text: 1, or 0 for the bytes of operators the transform inserted."""
    raw = transformed.encode("utf-8")
    weights = np.ones(len(raw), dtype=np.int64)
    escaped_until = -1
    for m in _OPERATOR_BYTES_RE.finditer(raw):
        start = m.start()
        if start == escaped_until:  # the literal after an ESC keeps its bytes
            continue
        weights[start:start + 3] = 0
        if m.group() == _ESC_BYTES:
            escaped_until = start + 3
    return weights


def operator_ids(sp) -> np.ndarray:
    """Ids of the four operators in a SentencePiece model; refuses a model that does not reserve them."""
    ids = []
    for op in OPERATORS:
        i = sp.piece_to_id(op)
        if i == sp.unk_id() or sp.id_to_piece(i) != op:
            raise PgolfError(f"tokenizer does not reserve the CaseOps operator U+{ord(op):04X} as a piece; train it "
                             f"with pgolf data build --caseops --vocab-size N or use the official CaseOps tokenizer")
        ids.append(i)
    return np.array(ids, dtype=np.int64)


def _cap_counts(counts: np.ndarray, carriers: np.ndarray) -> np.ndarray:
    """Move any excess over uint16 (a pathologically long whitespace run) onto the following carriers (then the
    other tokens), and what is still left onto earlier ones."""
    if counts.size == 0 or counts.max() <= _MAX_COUNT:
        return counts
    order = [*np.flatnonzero(carriers), *np.flatnonzero(~carriers)]
    excess = 0
    for i in order:
        counts[i] += excess
        excess = max(0, int(counts[i]) - _MAX_COUNT)
        counts[i] -= excess
    for i in reversed(order):
        room = min(excess, _MAX_COUNT - int(counts[i]))
        counts[i] += room
        excess -= room
    if excess:
        raise PgolfError(f"a document's {int(counts.sum()) + excess} bytes cannot be spread over its {counts.size} "
                         f"tokens within the uint16 sidecar")
    return counts


def piece_original_bytes(transformed: str, ids: np.ndarray, begins: np.ndarray, ends: np.ndarray,
                         op_ids: np.ndarray, byte_piece: np.ndarray) -> tuple[np.ndarray, int]:
    """(original bytes charged to each piece, bytes left for BOS) for one encoded transformed document.

    `begins`/`ends` are SentencePiece's byte offsets of each piece into `transformed`; `byte_piece[id]` tells
    byte-fallback pieces."""
    weights = original_byte_weights(transformed)
    prefix = np.concatenate([[0], np.cumsum(weights)])
    total = int(prefix[-1])
    n = len(ids)
    if n == 0:
        return np.zeros(0, dtype=np.int64), total
    ends_m = np.maximum.accumulate(np.minimum(ends.astype(np.int64), len(weights)))
    starts = np.concatenate([[0], ends_m[:-1]])
    own_from = np.clip(begins.astype(np.int64), starts, ends_m)
    own = prefix[ends_m] - prefix[own_from]
    gaps = prefix[own_from] - prefix[starts]
    carriers = ~np.isin(ids, op_ids) | (own > 0)
    counts = np.where(carriers, own, 0)
    leftover = total - int(prefix[ends_m[-1]]) + int(gaps[~carriers].sum()) + int(own[~carriers].sum())
    counts = counts + np.where(carriers, gaps, 0)
    carrier_idx = np.flatnonzero(carriers)
    if leftover:
        # gap bytes met at a non-carrier go to the next carrier; the tail (and anything after the last carrier)
        # to the last carrier
        stray = np.flatnonzero(~carriers & (gaps > 0))
        nxt = np.searchsorted(carrier_idx, stray)
        for s, k in zip(stray, nxt):
            if k < len(carrier_idx):
                counts[carrier_idx[k]] += gaps[s]
                leftover -= int(gaps[s])
        if len(carrier_idx):
            counts[carrier_idx[-1]] += leftover
            leftover = 0
    # byte-fallback pieces of one character (consecutive, same begin) share its weight evenly
    byte_idx = np.flatnonzero(byte_piece[ids])
    if byte_idx.size > 1:
        new_group = np.ones(byte_idx.size, dtype=bool)
        new_group[1:] = (np.diff(byte_idx) != 1) | (begins[byte_idx[1:]] != begins[byte_idx[:-1]])
        bounds = [*np.flatnonzero(new_group).tolist(), byte_idx.size]
        for a, b in zip(bounds[:-1], bounds[1:]):
            if b - a > 1:
                t, u = int(byte_idx[a]), int(byte_idx[b - 1]) + 1
                share, extra = divmod(int(counts[t:u].sum()), u - t)
                counts[t:u] = share
                counts[u - extra:u] += 1
    return _cap_counts(counts.astype(np.int64), carriers), leftover


def encode_with_sidecars(sp, transformed_texts: Sequence[str],
                         workers: int = 1) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per transformed document: (uint16 `[BOS] + ids` exactly as `encode_documents` makes them, uint16 original-byte
    counts aligned with those tokens)."""
    bos = sp.bos_id()
    op_ids = operator_ids(sp)
    byte_piece = np.array([sp.is_byte(i) for i in range(sp.get_piece_size())], dtype=bool)
    protos = sp.encode(list(transformed_texts), return_type="proto", num_threads=max(1, workers))
    out = []
    for text, proto in zip(transformed_texts, protos):
        spans = np.array([(p.id, p.begin, p.end) for p in proto.pieces], dtype=np.int64).reshape(-1, 3)
        ids, begins, ends = spans[:, 0], spans[:, 1], spans[:, 2]
        counts, for_bos = piece_original_bytes(text, ids, begins, ends, op_ids, byte_piece)
        if for_bos > _MAX_COUNT:
            raise PgolfError(f"a document with {for_bos} bytes and no text token cannot fit the uint16 sidecar")
        out.append((np.concatenate([[bos], ids]).astype(np.uint16),
                    np.concatenate([[for_bos], counts]).astype(np.uint16)))
    return out
