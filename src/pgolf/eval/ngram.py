"""Causal n-gram hints for the n-gram tilt (PR #1145's idea; the token-only form of PRs #1514, #2018 and #2135).

For every position p of a token stream the hint is the token that most often followed p's context (the `order - 1`
tokens before it) at EARLIER positions, with its share of those continuations; the tilt later boosts that logit where
the share clears a threshold. Hints read only `tokens[:p]`, and the tables are never reset (not at document
boundaries), so the tilt is score-first legal. Ties keep the token that reached the top count first: the online rule
is "after counting tok, if count(tok) > top_count: top = tok" in stream order.

PR #2135 computes this with native hash tables in ~200 s of the 600 s eval budget. Here the same state is computed
without a loop over tokens: positions are stably sorted by context, so each context's occurrences are contiguous and
in time order; an occurrence's rank within its (context, token) group is the running pair count, a segmented running
maximum of those counts is the top count, the last strict increase of that maximum is the top token, and the hint at
an occurrence is the state after the previous occurrence of its context. It is all torch (CPU or CUDA, one code path)
except two CPU primitives that go through numpy: the sort (its SIMD sort of packed int64 is ~8x faster than torch's)
and the running maximum. On one CPU core a 47.9M-token stream at order 16 takes ~6 s exact and ~12 s hashed on real
text, ~25 s when nearly every context repeats (benchmarks/ngram_hints.py).

Two keyings, one algorithm:

- exact (default): contexts are grouped by a 64-bit hash, and every pair of neighbours that share a hash is checked
  token by token; groups that really hold different contexts are split exactly (`torch.unique` over their rows), so
  no two contexts are ever merged.
- hashed: PR #2135's `online_ngram_state.c` keys, collisions included (they merge some different contexts, and a
  pair count is shared by every (context, token) whose pair key collides). The context key is the XOR of
  `tokens[p-L+j] * COEF[j]` (j = 0 the oldest of the L = order - 1 tokens), the pair key is
  `(ctx_key * 1000003) ^ (tokens[p] * COEF[L % 32])`, all in wrapping uint64 arithmetic.

Both modes use the token-stream definition above: #2135 ran over the stream of targets with its ring seeded by the
first target, which differs only at the very first context position.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from pgolf.errors import PgolfError

# PR #2135's context coefficients (one per context slot, the oldest first) and its pair mixer.
WEAK_COEF = (36313, 27191, 51647, 81929, 131071, 196613, 262147, 393241, 524309, 655373, 786433, 917521, 1048583,
             1179653, 1310729, 1441801, 1572869, 1703941, 1835017, 1966087, 2097169, 2228243, 2359319, 2490389,
             2621471, 2752549, 2883617, 3014687, 3145757, 3276833, 3407903, 3538973)
WEAK_PAIR_MIX = 1_000_003
MAX_VOCAB = 1 << 16

# Odd multipliers of the sort hash (splitmix64's constants): the top bits of the product depend on every key bit.
_GOLDEN = 0x9E3779B97F4A7C15 - (1 << 64)
_MIX = 0xBF58476D1CE4E5B9 - (1 << 64)
_VERIFY_CHUNK = 1 << 18  # neighbour pairs compared per step (bounds the gathered rows to a few tens of MB)


@dataclass(frozen=True)
class NgramHints:
    """Per-position hints: `token[p]` (int64) and `share[p]` (float32, top count / continuations seen; 0 with token 0
    where the context never occurred before). `seen` counts positions whose context occurred earlier."""

    token: torch.Tensor
    share: torch.Tensor
    seen: int
    order: int
    hashed: bool

    def confident(self, threshold: float) -> torch.Tensor:
        """Where the tilt would fire: share >= threshold (a bool tensor [N])."""
        return self.share >= threshold


def ngram_hints(tokens: np.ndarray | torch.Tensor, order: int, *, hashed: bool = False,
                device: torch.device | str | None = None) -> NgramHints:
    """Causal top-continuation hints of every position of `tokens` (1-D ids in [0, 65536)) for contexts of
    `order - 1` tokens, computed on `device` (CPU by default)."""
    ctx_len = order - 1
    if order < 2 or (hashed and ctx_len > len(WEAK_COEF)):
        raise PgolfError(f"n-gram hints: order must be >= 2{' and <= 33 when hashed' if hashed else ''}, got {order}")
    t = _as_tokens(tokens, device)
    n = t.numel()
    token = torch.zeros(n, dtype=torch.int64, device=t.device)
    share = torch.zeros(n, dtype=torch.float32, device=t.device)
    m = n - ctx_len  # items i = 0..m-1 are the positions p = i + ctx_len that have a context
    if m < 2:
        return NgramHints(token, share, 0, order, hashed)
    nxt = t[ctx_len:]  # the token each item predicts

    # 1. Group items by context, in time order within each group; only groups of two or more can hint.
    if hashed:
        ctx_key = _weak_context_keys(t, ctx_len)
        ctx_order, ctx_first = _grouped_order(ctx_key)
    else:
        ctx_order, ctx_first = _grouped_order(_context_hash(t, ctx_len), _context_rows(t, ctx_len))
    single = ctx_first.clone()
    single[:-1] &= ctx_first[1:]
    singles = int(single.sum())
    if singles == m:
        return NgramHints(token, share, 0, order, hashed)
    if singles >= m // 4:  # drop the singletons where that pays (on real text it leaves a few percent)
        kept = (~single).nonzero().squeeze(1)
        items = ctx_order.index_select(0, kept)
        first = ctx_first.index_select(0, kept)
        del kept
    else:
        items, first = ctx_order, ctx_first
    del single, ctx_order, ctx_first
    group = torch.cumsum(first, 0) - 1
    tok = nxt.index_select(0, items)

    # 2. Pair counts: each occurrence's 1-based rank among the earlier occurrences of its (context, token) pair.
    if hashed:  # PR #2135's pair table is global: colliding pairs of different contexts share a count
        pair_key = ctx_key * WEAK_PAIR_MIX
        pair_key ^= nxt * WEAK_COEF[ctx_len % len(WEAK_COEF)]
        del ctx_key
        counts = _occurrence_counts(*_grouped_order(pair_key)).index_select(0, items)
        del pair_key
    else:  # exact pairs nest inside exact context groups, so the pair count needs no hash and no other group
        counts = _occurrence_counts(*_grouped_by_token(group, tok))

    # 3. Segmented running maximum of the counts (offset by group so that segments never mix), and its last strict
    # rise: the top count and the slot of the top token after each occurrence.
    run = group * (n + 1)
    run += counts
    del counts
    run = _cummax(run)
    rise = torch.ones_like(first)
    rise[1:] = run[1:] > run[:-1]  # the maximum rises exactly where a count beats every earlier one of its group
    slot = torch.arange(run.numel(), device=t.device)
    top_slot = _cummax(torch.where(rise, slot, 0))
    del rise
    run -= group * (n + 1)  # the top count
    del group
    start = _cummax(torch.where(first, slot, 0))  # the group's first slot
    del slot

    # 4. The hint at an occurrence is the state after the previous occurrence of its context, whose count of
    # continuations is the occurrence's rank within its group.
    hint = (~first).nonzero().squeeze(1)
    del first
    prev = hint - 1
    top_token = tok.index_select(0, top_slot.index_select(0, prev))
    del tok, top_slot
    top_share = run.index_select(0, prev).float() / (hint - start.index_select(0, hint)).float()
    del run, start, prev
    pos = items.index_select(0, hint) + ctx_len
    del items
    token.index_copy_(0, pos, top_token)
    share.index_copy_(0, pos, top_share)
    return NgramHints(token, share, int(hint.numel()), order, hashed)


def _as_tokens(tokens: np.ndarray | torch.Tensor, device: torch.device | str | None) -> torch.Tensor:
    if isinstance(tokens, torch.Tensor):
        t = tokens.to(device=device if device is not None else tokens.device, dtype=torch.int64)
    else:
        t = torch.from_numpy(np.asarray(tokens).astype(np.int64, copy=False)).to(device or "cpu")
    if t.dim() != 1:
        raise PgolfError(f"n-gram hints: tokens must be 1-D, got shape {tuple(t.shape)}")
    if t.numel() and (int(t.min()) < 0 or int(t.max()) >= MAX_VOCAB):
        raise PgolfError(f"n-gram hints: token ids must be in [0, {MAX_VOCAB})")
    return t.contiguous()


def _signed(u: int) -> int:
    """A uint64 constant as the int64 with the same bits (torch integer arithmetic wraps in two's complement)."""
    return u - (1 << 64) if u >= 1 << 63 else u


def _odd_multipliers(count: int) -> list[int]:
    """Fixed pseudo-random odd 64-bit multipliers (splitmix64 of 0, 1, ...)."""
    out = []
    for i in range(count):
        z = (i + 1) * 0x9E3779B97F4A7C15 % (1 << 64)
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9 % (1 << 64)
        z = (z ^ (z >> 27)) * 0x94D049BB133111EB % (1 << 64)
        out.append(_signed((z ^ (z >> 31)) | 1))
    return out


def _context_hash(t: torch.Tensor, ctx_len: int) -> torch.Tensor:
    """sum_j tokens[i+j] * R_j mod 2^64 with fixed pseudo-random odd R_j (for random ones, two different contexts
    would collide with probability <= 2^-48, as token differences are < 2^16). The sort keeps only its top ~37 bits,
    where a 48M-token stream has some 8,000 collisions: they cost a re-split, never correctness."""
    m = t.numel() - ctx_len
    mult = _odd_multipliers(ctx_len)
    h = t[:m] * mult[0]
    for j in range(1, ctx_len):
        h.add_(t[j:j + m], alpha=mult[j])
    return h


def _context_rows(t: torch.Tensor, ctx_len: int) -> Callable[[torch.Tensor], torch.Tensor]:
    """items -> their contexts as int64 words of four int16 tokens (ids >= 2^15 wrap but stay distinct), the tokens
    past the context masked off: an exact identity that compares 4x fewer elements than token rows."""
    words = -(-ctx_len // 4)
    padded = torch.zeros(t.numel() + 4 * words - ctx_len, dtype=torch.int16, device=t.device)
    padded[:t.numel()] = t
    windows = padded.unfold(0, 4 * words, 1)
    keep = _signed((1 << (16 * (ctx_len - 4 * (words - 1)))) - 1)  # little-endian: the first token is the low bits

    def rows(items: torch.Tensor) -> torch.Tensor:
        out = windows.index_select(0, items).view(torch.int64)
        out[:, -1] &= keep
        return out

    return rows


def _weak_context_keys(t: torch.Tensor, ctx_len: int) -> torch.Tensor:
    """PR #2135's context key of every item: XOR_j tokens[i+j] * COEF[j]."""
    m = t.numel() - ctx_len
    h = t[:m] * WEAK_COEF[0]
    term = torch.empty_like(h)
    for j in range(1, ctx_len):
        h ^= torch.mul(t[j:j + m], WEAK_COEF[j], out=term)
    return h


def _sort_values(x: torch.Tensor) -> torch.Tensor:
    """Ascending sort of distinct int64 values (stability is moot), in place on CPU with numpy's SIMD sort (~1 s for
    48M values on one core, torch's takes ~8 s); torch's radix sort on CUDA."""
    if x.device.type == "cpu":
        x.numpy().sort()
        return x
    return torch.sort(x).values


def _cummax(x: torch.Tensor) -> torch.Tensor:
    """Running maximum of a 1-D int64 tensor, in place on CPU (numpy's, no index tensor); torch's on CUDA."""
    if x.device.type == "cpu":
        np.maximum.accumulate(x.numpy(), out=x.numpy())
        return x
    return torch.cummax(x, 0).values


def _grouped_order(key: torch.Tensor, identity: Callable[[torch.Tensor], torch.Tensor] | None = None,
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """Items 0..m-1 ordered by group, then by index (time), and a bool per slot that is True where a group starts.

    Items are grouped by `identity(items)` (rows [n, w], equal iff the items belong together; default: the key
    itself) and `key` is its hash. One sort of (top hash bits << index bits | index) puts each hash group in time
    order; neighbours sharing hash bits are then compared by identity, and any group that holds different
    identities is re-split exactly."""
    if identity is None:
        identity = lambda items: key.index_select(0, items).unsqueeze(1)  # noqa: E731
    m = key.numel()
    bits = max(1, (m - 1).bit_length())
    packed = key * _GOLDEN  # PR #2135's keys are < 2^38 and too regular for one multiply: mix twice
    packed ^= packed >> 29
    packed *= _MIX
    packed >>= bits + 1
    packed &= (1 << (63 - bits)) - 1
    packed <<= bits
    packed |= torch.arange(m, device=key.device)
    packed = _sort_values(packed)
    order = packed & ((1 << bits) - 1)
    packed >>= bits
    hi = packed  # the sorted hash bits
    first = torch.ones(m, dtype=torch.bool, device=key.device)
    torch.ne(hi[1:], hi[:-1], out=first[1:])
    need = ~first  # slots in a hash group of two or more: each is gathered once and compared with its predecessor
    need[:-1] |= ~first[1:]
    slots = need.nonzero().squeeze(1)
    del need
    bad = []
    for c in range(0, slots.numel(), _VERIFY_CHUNK):
        chunk = slots[max(c - 1, 0):c + _VERIFY_CHUNK]
        rows = identity(order.index_select(0, chunk))
        differ = (rows[1:] != rows[:-1]).any(1)
        differ &= ~first.index_select(0, chunk[1:])
        bad.append(chunk[1:][differ])
    bad = torch.cat(bad) if bad else slots
    if bad.numel():
        _split_collisions(order, first, hi, bad, identity)
    return order, first


def _split_collisions(order: torch.Tensor, first: torch.Tensor, hi: torch.Tensor, bad: torch.Tensor,
                      identity: Callable[[torch.Tensor], torch.Tensor]) -> None:
    """Re-split, in place, every hash group (a run of equal sorted `hi`) that holds a `bad` slot (one whose identity
    differs from its predecessor's) into one group per identity, each still in time order."""
    runs = torch.unique(hi.index_select(0, bad))
    lo = torch.searchsorted(hi, runs)
    size = torch.searchsorted(hi, runs, right=True) - lo
    g = torch.repeat_interleave(torch.arange(runs.numel(), device=hi.device), size)
    slots = torch.arange(g.numel(), device=hi.device) + (lo - (torch.cumsum(size, 0) - size)).index_select(0, g)
    items = order.index_select(0, slots)
    rows = identity(items)
    if rows.shape[1] == 1:
        cls = torch.unique(rows[:, 0], return_inverse=True)[1]
    else:
        cls = torch.unique(rows, dim=0, return_inverse=True)[1]
    perm = torch.sort(cls, stable=True).indices  # (cls, time) ...
    perm = perm.index_select(0, torch.sort(g.index_select(0, perm), stable=True).indices)  # ... -> (run, cls, time)
    g, cls = g.index_select(0, perm), cls.index_select(0, perm)
    order[slots] = items.index_select(0, perm)
    starts = torch.ones_like(g, dtype=torch.bool)
    starts[1:] = (g[1:] != g[:-1]) | (cls[1:] != cls[:-1])
    first[slots] = starts


def _grouped_by_token(group: torch.Tensor, tok: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """`_grouped_order` for exact (group, token) pairs of slots already ordered by group, then time: one exact sort
    by (token, slot), with no hash, orders them by (token, group, time), as each group is a contiguous run of slots."""
    k = tok.numel()
    bits = max(1, (k - 1).bit_length())
    packed = tok << bits
    packed |= torch.arange(k, device=tok.device)
    packed = _sort_values(packed)
    order = packed & ((1 << bits) - 1)
    packed >>= bits
    g = group.index_select(0, order)
    first = torch.ones(k, dtype=torch.bool, device=tok.device)
    torch.ne(packed[1:], packed[:-1], out=first[1:])
    first[1:] |= g[1:] != g[:-1]
    return order, first


def _occurrence_counts(order: torch.Tensor, first: torch.Tensor) -> torch.Tensor:
    """For each item of a grouping (`_grouped_order`'s result), how many items of its group up to and including it
    (in time order) there are."""
    slot = torch.arange(order.numel(), device=order.device)
    rank = slot - _cummax(torch.where(first, slot, 0))
    counts = torch.empty_like(rank)
    counts.index_copy_(0, order, rank + 1)
    return counts
