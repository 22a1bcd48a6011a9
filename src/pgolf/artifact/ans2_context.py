"""Context modelling of quantized-integer streams for the `ans2` codec: row classes, column classes, row references.

`ans` codes each tensor group with one order-0 histogram (or 2-4 column classes). Quantized weight matrices have
more structure than that, and the 1.0611 record's per-group lrzip stage (ZPAQ context mixing on transposed,
similarity-sorted rows; docs/rules.md#compressors) finds some of it adaptively. `ans2` models it explicitly and
statically, so that decoding stays a few vectorized rANS calls:

- **Column classes** (`kc` of 1-16): input features differ in scale and in mean (an embedding's common direction
  shifts whole columns). Each column of each matrix carries a label.
- **Row classes** (`kr` of 1-8): rows differ too (rarely-trained embedding rows, outlier output channels).
- **Row references** (the long-range stage): a row may name another row of the same matrix, its nearest neighbour
  by L2 distance; its values are then coded in contexts of the reference's value in the same column (clipped to
  -8..8), which captures near-duplicate and similar rows, where the record sorted rows by similarity so that its
  context mixer would see them next to each other. Rows that do not profit (the index costs log2(rows) bits) stay
  plain. The references form a forest of depth at most `MAX_DEPTH`; decoding runs level by level.

An element's context is (row class, column class) in a plain row and (row class, clipped reference value) in a
referencing row; each context has its own `rans` model and rANS stream. The labels and the row/reference flags
are rANS-coded too, reference indices are packed bits. The encoder chooses labels by hard-EM co-clustering
(alternately re-assigning every column and every row to the class with the cheapest code under the current
histograms, the information-theoretic co-clustering of I. Dhillon, S. Mallela and D. Modha, KDD 2003), and chooses
`kc`, `kr` and whether to use references by the exact coded size. All cost arithmetic is on integers (or floats
holding exact integers), so the encoder is deterministic.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pgolf.artifact.rans import (ByteReader, SymbolDecoder, SymbolModel, encode_symbols, fit_model, histogram,
                                 model_bytes, read_model, write_varint)
from pgolf.errors import PgolfError

BUCKET = 8  # a reference value v gives context clip(v, -8, 8)
N_BUCKETS = 2 * BUCKET + 1
MAX_DEPTH = 32  # longest chain of references (decoding takes one pass per level)
KC_CHOICES = (1, 2, 4, 8, 16)
KR_CHOICES = (1, 2, 4, 8)
EM_ROUNDS = 5
SEARCH_ELEMENTS = 1 << 21  # streams larger than this search class counts on a subsample of rows
_COST_SCALE = 1 << 12  # costs in 1/4096 bit, held as integers in float64 (exact sums, any summation order)
_INF = float(1 << 50)


@dataclass
class Plan:
    """What the decoder reads before the symbols of one stream: class counts, labels and references."""

    kr: int
    kc: int
    refs: bool
    cols: list[np.ndarray]  # per matrix: column class of every column (int64)
    rows: list[np.ndarray]  # per matrix: row class of every row
    parents: list[np.ndarray]  # per matrix: referenced row of every row, -1 for a plain row

    @property
    def width(self) -> int:
        """Second context axis: column classes, then reference buckets."""
        return self.kc + (N_BUCKETS if self.refs else 0)

    @property
    def contexts(self) -> int:
        """All contexts of the stream: kr x width for matrix elements, plus one for non-matrix values."""
        return self.kr * self.width + 1


def _buckets(values: np.ndarray) -> np.ndarray:
    return np.clip(values.astype(np.int16), -BUCKET, BUCKET) + np.int16(BUCKET)


def element_contexts(plan: Plan, m: int, values: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """Context of every element of `rows` of matrix `m` (values: the whole matrix, with those rows' references
    already known), as int16: fewer than 300 contexts, and numpy sorts 16-bit keys by radix."""
    parent = plan.parents[m][rows]
    second = np.broadcast_to(plan.cols[m].astype(np.int16)[None, :], (rows.size, values.shape[1]))
    if plan.refs and (parent >= 0).any():
        ref = parent >= 0
        second = np.array(second)
        second[ref] = np.int16(plan.kc) + _buckets(values[parent[ref]])
    return (plan.rows[m][rows].astype(np.int16) * np.int16(plan.width))[:, None] + second


def _depths(parents: np.ndarray) -> np.ndarray:
    """Depth of every row in its reference forest, -1 where it is deeper than MAX_DEPTH or on a cycle."""
    depth = np.where(parents < 0, 0, -1)
    for d in range(1, MAX_DEPTH + 1):
        todo = depth < 0
        if not todo.any():
            break
        ready = todo.copy()
        ready[todo] = depth[parents[todo]] == d - 1
        depth[ready] = d
    return depth


def levels(parents: np.ndarray, what: str) -> np.ndarray:
    """Depth of every row in its reference forest; PgolfError on a reference cycle, an out-of-range index or a
    chain deeper than MAX_DEPTH."""
    n = parents.size
    if n and (parents.max() >= n or parents.min() < -1 or (parents == np.arange(n)).any()):
        raise PgolfError(f"{what} is corrupt: row reference out of range")
    depth = _depths(parents)
    if (depth < 0).any():
        raise PgolfError(f"{what} is corrupt: row references form a cycle or a chain deeper than {MAX_DEPTH}")
    return depth


# ----------------------------------------------------------------------------------------------- fitting (encoder)

def _nearest_rows(values: np.ndarray) -> np.ndarray:
    """Each row's nearest other row by L2 distance (ties: the lowest index); -1 for a single row. The Gram matrix
    of integers is computed in floating point but exactly (float32 while every sum stays below 2**24)."""
    n, cols = values.shape
    if n < 2:
        return np.full(n, -1, dtype=np.int64)
    peak = int(np.abs(values).max()) if values.size else 0
    dtype = np.float32 if cols * peak * peak * 2 < (1 << 24) else np.float64
    x = values.astype(dtype)
    sq = (x * x).sum(axis=1)
    out = np.empty(n, dtype=np.int64)
    for a in range(0, n, 1024):
        d = sq[a:a + 1024, None] + sq[None, :] - 2 * (x[a:a + 1024] @ x.T)
        d[np.arange(d.shape[0]), np.arange(a, a + d.shape[0])] = np.inf
        out[a:a + 1024] = d.argmin(axis=1)
    return out


def _quantile_labels(stat: np.ndarray, k: int) -> np.ndarray:
    if k == 1 or stat.size == 0:
        return np.zeros(stat.size, dtype=np.int64)
    return np.digitize(stat, np.quantile(stat, np.linspace(0, 1, k + 1)[1:-1])).astype(np.int64)


def _split(flat: np.ndarray, sizes: list[int]) -> list[np.ndarray]:
    return np.split(flat, np.cumsum(sizes)[:-1]) if sizes else []


def _costs(counts: np.ndarray) -> np.ndarray:
    """Integer code lengths (1/4096 bit) of every symbol under add-0.5 estimates of `counts` (last axis)."""
    p = (counts + 0.5) / (counts + 0.5).sum(axis=-1, keepdims=True)
    return np.rint(-np.log2(p) * _COST_SCALE)


def _prior(labels: np.ndarray, k: int) -> np.ndarray:
    c = np.bincount(labels, minlength=k) + 0.5
    return np.rint(-np.log2(c / c.sum()) * _COST_SCALE)


def _sum_by(labels: np.ndarray, k: int, n: np.ndarray) -> np.ndarray:
    """Rows of `n` (one per label) summed per label 0..k-1."""
    out = np.zeros((k,) + n.shape[1:], dtype=np.int64)
    for c in range(k):
        out[c] = n[labels == c].sum(axis=0)
    return out


class _Fitter:
    """Hard-EM co-clustering of one stream's matrices for a given (kr, kc, refs).

    Each half-round counts, in one pass over the elements, the histograms of every column by row class (column
    step) or of every row by column class (row step); the context histograms are sums of those, so the costs of
    the current labels and the best new label of every column or row come from the same counts. A row's
    histograms in the reference contexts do not depend on any label and are counted once."""

    def __init__(self, mats: list[np.ndarray], low: int, size: int, candidates: list[np.ndarray] | None):
        self.mats, self.low, self.size = mats, low, size
        self.syms = [(m.astype(np.int32) - np.int32(low)) for m in mats]
        self.cand = candidates
        self.ref_counts = None
        if candidates is not None:
            self.ref_counts = []
            for m, c, sym in zip(mats, candidates, self.syms):
                rows = sym.shape[0]
                idx = (np.arange(rows, dtype=np.int32)[:, None] * N_BUCKETS + _buckets(m[np.maximum(c, 0)])) * size + sym
                n = np.bincount(idx.ravel(), minlength=rows * N_BUCKETS * size)
                self.ref_counts.append(n.reshape(rows, N_BUCKETS * size).astype(np.int32))

    def _counts(self, plan: Plan) -> np.ndarray:
        S, W = self.size, plan.width
        total = np.zeros(plan.kr * W * S, dtype=np.int64)
        for m, s in enumerate(self.syms):
            ctx = element_contexts(plan, m, self.mats[m], np.arange(s.shape[0]))
            total += np.bincount((ctx.astype(np.int32) * S + s).ravel(), minlength=total.size)
        return total.reshape(plan.kr, W, S)

    def _ref_totals(self, plan: Plan) -> np.ndarray:
        """Histograms of the reference contexts (kr, N_BUCKETS * S)."""
        total = np.zeros((plan.kr, N_BUCKETS * self.size), dtype=np.int64)
        for m, n in enumerate(self.ref_counts):
            ref = plan.parents[m] >= 0
            total += _sum_by(plan.rows[m][ref], plan.kr, n[ref])
        return total

    def _column_step(self, plan: Plan) -> None:
        S, kr, kc = self.size, plan.kr, plan.kc
        per_member = []
        totals = np.zeros((kc, kr * S), dtype=np.int64)
        for m, s in enumerate(self.syms):
            plain = plan.parents[m] < 0
            cols = s.shape[1]
            idx = (np.arange(cols, dtype=np.int32)[None, :] * kr + plan.rows[m][plain][:, None].astype(np.int32)) * S \
                + s[plain]
            n = np.bincount(idx.ravel(), minlength=cols * kr * S).reshape(cols, kr * S)
            per_member.append(n)
            totals += _sum_by(plan.cols[m], kc, n)
        counts = np.zeros((kr, plan.width, S), dtype=np.int64)
        counts[:, :kc, :] = totals.reshape(kc, kr, S).transpose(1, 0, 2)
        if plan.refs:
            counts[:, kc:, :] = self._ref_totals(plan).reshape(kr, N_BUCKETS, S)
        table = _costs(counts)[:, :kc, :].transpose(0, 2, 1).reshape(kr * S, kc)
        prior = _prior(np.concatenate(plan.cols), kc)
        for m, n in enumerate(per_member):
            plan.cols[m] = (n.astype(np.float64) @ table + prior).argmin(axis=1)

    def _row_step(self, plan: Plan) -> None:
        S, kr, kc = self.size, plan.kr, plan.kc
        per_member = []
        counts = np.zeros((kr, plan.width, S), dtype=np.int64)
        for m, s in enumerate(self.syms):
            rows = s.shape[0]
            idx = (np.arange(rows, dtype=np.int32)[:, None] * kc + plan.cols[m][None, :].astype(np.int32)) * S + s
            n = np.bincount(idx.ravel(), minlength=rows * kc * S).reshape(rows, kc * S)
            per_member.append(n)
            plain = plan.parents[m] < 0
            counts[:, :kc, :] += _sum_by(plan.rows[m][plain], kr, n[plain]).reshape(kr, kc, S)
        if plan.refs:
            counts[:, kc:, :] = self._ref_totals(plan).reshape(kr, N_BUCKETS, S)
        cost = _costs(counts)
        prior = _prior(np.concatenate(plan.rows), kr)
        for m, n in enumerate(per_member):
            plain = n.astype(np.float64) @ cost[:, :kc, :].reshape(kr, kc * S).T + prior
            if not plan.refs:
                plan.rows[m] = plain.argmin(axis=1)
                continue
            rows = n.shape[0]
            index_bits = max(1, (rows - 1).bit_length()) * _COST_SCALE
            ref = self.ref_counts[m].astype(np.float64) @ cost[:, kc:, :].reshape(kr, N_BUCKETS * S).T
            ref += prior + index_bits
            ref[self.cand[m] < 0] = _INF
            use = ref.min(axis=1) < plain.min(axis=1)
            parents = _acyclic(np.where(use, self.cand[m], -1), plain.min(axis=1) - ref.min(axis=1))
            plan.parents[m] = parents
            plan.rows[m] = np.where(parents >= 0, ref.argmin(axis=1), plain.argmin(axis=1))

    def fit(self, kr: int, kc: int, refs: bool) -> Plan:
        stat_c = [np.abs(m).mean(axis=0) for m in self.mats]
        stat_r = [np.abs(m).mean(axis=1) for m in self.mats]
        plan = Plan(kr, kc, refs, _split(_quantile_labels(np.concatenate(stat_c), kc), [m.shape[1] for m in self.mats]),
                    _split(_quantile_labels(np.concatenate(stat_r), kr), [m.shape[0] for m in self.mats]),
                    [np.full(m.shape[0], -1, dtype=np.int64) for m in self.mats])
        if refs:  # start with every row referencing its neighbour, so the reference contexts have statistics
            plan.parents = [_acyclic(c, np.zeros(c.size)) for c in self.cand]
        if kr == 1 and kc == 1 and not refs:
            return plan
        for _ in range(EM_ROUNDS):
            if kc > 1:
                self._column_step(plan)
            if kr > 1 or refs:
                self._row_step(plan)
        return plan


def _acyclic(parents: np.ndarray, gain: np.ndarray) -> np.ndarray:
    """Drop references until the forest has no cycle and no chain deeper than MAX_DEPTH: in each cycle the row
    that gains least from its reference (ties: the lower index) becomes plain; then the first rows past the depth
    limit become plain. Nearest-neighbour references only make 2-cycles (mutual neighbours), handled at once."""
    parents = parents.copy()
    idx = np.arange(parents.size)
    other = np.maximum(parents, 0)
    mutual = (parents >= 0) & (parents[other] == idx)
    parents[mutual & ((gain < gain[other]) | ((gain == gain[other]) & (idx < other)))] = -1
    state = np.zeros(parents.size, dtype=np.int8)  # 0 new, 1 on the current path, 2 done
    for start in np.flatnonzero(_depths(parents) < 0).tolist():
        path = []
        node = start
        while node >= 0 and state[node] == 0:
            state[node] = 1
            path.append(node)
            node = int(parents[node])
        if node >= 0 and state[node] == 1:  # closed a cycle: path from node's position to the end
            cycle = path[path.index(node):]
            parents[min(cycle, key=lambda i: (gain[i], i))] = -1
        state[path] = 2
    while True:
        depth = _depths(parents)
        if (depth >= 0).all():
            return parents
        parents[(depth < 0) & (depth[np.maximum(parents, 0)] == MAX_DEPTH)] = -1  # the first rows past the limit


# ------------------------------------------------------------------------------------------------- stream coding

def _label_block(labels: np.ndarray, head: bytearray) -> None:
    """Labels (0..255) as model table + varint length + rANS words, inline in the header."""
    values = labels.astype(np.uint8)
    model = fit_model(*histogram(values))
    words = encode_symbols(values, model)
    head += model_bytes(model)
    write_varint(head, len(words))
    head += words


def _read_labels(reader: ByteReader, count: int, k: int, label: str) -> np.ndarray:
    model = read_model(reader, 0, k - 1)
    words = reader.take(reader.varint(label), label)
    dec = SymbolDecoder(words, model, reader.what)
    out = dec.take(count).astype(np.int64)
    dec.finish()
    return out


def _pack_parents(plan: Plan) -> bytes:
    bits = []
    for p in plan.parents:
        width = max(1, (p.size - 1).bit_length())
        ref = p[p >= 0]
        bits.append(((ref[:, None] >> np.arange(width)) & 1).astype(np.uint8).ravel())
    flat = np.concatenate(bits) if bits else np.zeros(0, np.uint8)
    return np.packbits(flat, bitorder="little").tobytes()


def _unpack_parents(data: bytes, flags: list[np.ndarray], what: str) -> list[np.ndarray]:
    bits = np.unpackbits(np.frombuffer(data, dtype=np.uint8), bitorder="little")
    pos, out = 0, []
    for f in flags:
        width = max(1, (f.size - 1).bit_length())
        n = int(f.sum())
        chunk = bits[pos:pos + n * width]
        if chunk.size != n * width:
            raise PgolfError(f"{what} is corrupt: row references are truncated")
        idx = (chunk.reshape(n, width).astype(np.int64) << np.arange(width)).sum(axis=1)
        p = np.full(f.size, -1, dtype=np.int64)
        p[f > 0] = idx
        out.append(p)
        pos += n * width
    if bits.size - pos >= 8 or bits[pos:].any():
        raise PgolfError(f"{what} is corrupt: row reference bits do not end where they should")
    return out


def _ordered(plan: Plan, mats: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """All matrix elements in decoding order (level, matrix, row, column) and their contexts."""
    depth = [levels(p, "ans2 plan") for p in plan.parents]
    top = max((int(d.max()) for d in depth if d.size), default=0)
    vals, ctxs = [], []
    for level in range(top + 1):
        for m, v in enumerate(mats):
            rows = np.flatnonzero(depth[m] == level)
            if rows.size:
                vals.append(v[rows].ravel())
                ctxs.append(element_contexts(plan, m, v, rows).ravel())
    if not vals:
        return np.zeros(0, dtype=mats[0].dtype if mats else np.int8), np.zeros(0, dtype=np.int16)
    return np.concatenate(vals), np.concatenate(ctxs)


def _grouped(ctx: np.ndarray, contexts: int) -> tuple[np.ndarray | None, np.ndarray]:
    """(order, bounds): element indices sorted stably by context (None when one context holds them all) and
    where each context's run starts and ends."""
    counts = np.bincount(ctx, minlength=contexts)
    order = None if counts.max(initial=0) == ctx.size else np.argsort(ctx, kind="stable")
    return order, np.concatenate(([0], np.cumsum(counts)))


def _context_models(plan: Plan, mats: list[np.ndarray], loose: np.ndarray):
    """(models, symbol sequences) per context; None for an empty context."""
    values, ctx = _ordered(plan, mats)
    order, bounds = _grouped(ctx, plan.contexts)
    seqs = [values[bounds[c]:bounds[c + 1]] if order is None else values[order[bounds[c]:bounds[c + 1]]]
            for c in range(plan.contexts - 1)] + [loose]
    return [fit_model(*histogram(s)) if s.size else None for s in seqs], seqs


def _table_bytes(counts: np.ndarray) -> float:
    """Bytes of one context: presence flag, table, length and coded words (cross-entropy of the fitted table)."""
    present = np.flatnonzero(counts)
    if present.size == 0:
        return 1.0
    counts = counts[present[0]:present[-1] + 1]
    model = fit_model(0, counts)
    total = 4.0 + len(model_bytes(model))
    if model.size > 1:
        used = counts > 0
        total += 4 + float(-(counts[used] * (np.log2(model.freqs[used]) - model.precision)).sum()) / 8
    return total


def _plan_bytes(plan: Plan, fitter: "_Fitter", loose: np.ndarray) -> float:
    """Estimated stream bytes: tables, coded symbols, labels and references."""
    counts = fitter._counts(plan).reshape(-1, fitter.size)
    total = 3.0 + sum(_table_bytes(c) for c in counts) + _table_bytes(histogram(loose)[1])
    for k, labels in ((plan.kc, plan.cols), (plan.kr, plan.rows)):
        if k > 1:
            total += _entropy_bytes(np.concatenate(labels)) + 4 + k * 2
    if plan.refs:
        flags = np.concatenate([p >= 0 for p in plan.parents]).astype(np.int64)
        total += _entropy_bytes(flags) + 8 + len(_pack_parents(plan))
    return total


def _entropy_bytes(labels: np.ndarray) -> float:
    c = np.bincount(labels).astype(np.float64)
    c = c[c > 0]
    return float(-(c * np.log2(c / c.sum())).sum()) / 8


def choose_plan(mats: list[np.ndarray], loose: np.ndarray) -> Plan:
    """The cheapest plan for a stream's matrices (int8/uint8, 2-D) and other values, by a greedy search: column
    classes (doubling while it pays), then row classes (both on every n-th row when the stream holds more than
    SEARCH_ELEMENTS values), then row references (int8 matrices only) with as many or twice as many row classes
    and, where they pay, fewer column classes. Every candidate is costed exactly (`_plan_bytes`)."""
    every = np.concatenate([m.ravel() for m in mats] + [loose.ravel()])
    low = int(every.min()) if every.size else 0
    size = int(every.max()) - low + 1 if every.size else 1
    if not mats:
        return Plan(1, 1, False, [], [], [])
    step = -(-sum(m.size for m in mats) // SEARCH_ELEMENTS)  # class counts are searched on every step-th row
    plain = _Fitter([m[::step] for m in mats], low, size, None)
    best = (_plan_bytes(plain.fit(1, 1, False), plain, loose), plain.fit(1, 1, False))

    def consider(fitter: _Fitter, kr: int, kc: int, refs: bool) -> bool:
        nonlocal best
        plan = fitter.fit(kr, kc, refs)
        size_ = _plan_bytes(plan, fitter, loose)
        if size_ < best[0]:
            best = (size_, plan)
            return True
        return False

    for kc in KC_CHOICES[1:]:
        if kc > max(m.shape[1] for m in mats) or not consider(plain, 1, kc, False):
            break
    kc = best[1].kc
    for kr in KR_CHOICES[1:]:
        if kr > -(-max(m.shape[0] for m in mats) // step) or not consider(plain, kr, kc, False):
            break
    kr = best[1].kr
    if step > 1:  # the chosen class counts, fitted on all rows
        plain = _Fitter(mats, low, size, None)
        best = (_plan_bytes(plain.fit(1, 1, False), plain, loose), plain.fit(1, 1, False))
        if (kr, kc) != (1, 1):
            consider(plain, kr, kc, False)
    if mats[0].dtype == np.int8 and any(m.shape[0] > 1 for m in mats):
        linked = _Fitter(mats, low, size, [_nearest_rows(m) for m in mats])
        if any([consider(linked, k, kc, True) for k in (kr, 2 * kr) if k in KR_CHOICES]):
            kr = best[1].kr  # references take over some rows: fewer column classes may do
            while kc > 1 and consider(linked, kr, kc // 2, True):
                kc //= 2
    return best[1]


def encode_stream(mats: list[np.ndarray], loose: np.ndarray, head: bytearray, coded: list[bytes]) -> None:
    """Choose a plan, write it and the context tables to `head`, and the coded contexts to `coded`."""
    plan = choose_plan(mats, loose)
    write_varint(head, plan.kr)
    write_varint(head, plan.kc)
    write_varint(head, int(plan.refs))
    if plan.kc > 1:
        _label_block(np.concatenate(plan.cols), head)
    if plan.kr > 1:
        _label_block(np.concatenate(plan.rows), head)
    if plan.refs:
        _label_block(np.concatenate([p >= 0 for p in plan.parents]), head)
        packed = _pack_parents(plan)
        write_varint(head, len(packed))
        head += packed
    models, seqs = _context_models(plan, mats, loose)
    for model, seq in zip(models, seqs):
        if model is None:
            write_varint(head, 0)
            continue
        write_varint(head, 1)
        head += model_bytes(model)
        coded.append(encode_symbols(seq, model))
        write_varint(head, len(coded[-1]))


@dataclass
class StreamHead:
    """A stream's plan, the depth of every row, and per context its table and coded length (None: empty)."""

    plan: Plan
    depth: list[np.ndarray]
    tables: list[tuple[SymbolModel, int] | None]


def read_stream(reader: ByteReader, shapes: list[tuple[int, int]], dtype: str) -> StreamHead:
    """Parse what `encode_stream` wrote to the header for matrices of `shapes` (in stream order)."""
    kr, kc, refs = reader.varint("row classes"), reader.varint("column classes"), reader.varint("references")
    if kr not in KR_CHOICES or kc not in KC_CHOICES or refs not in (0, 1) or (refs and dtype != "int8"):
        raise reader.fail(f"stream plan ({kr}, {kc}, {refs}) is not one this codec writes")
    if not shapes and (kr, kc, refs) != (1, 1, 0):
        raise reader.fail("a stream without matrices has a matrix plan")
    n_cols, n_rows = [c for _, c in shapes], [r for r, _ in shapes]
    cols = _read_labels(reader, sum(n_cols), kc, "column classes") if kc > 1 else np.zeros(sum(n_cols), np.int64)
    rows = _read_labels(reader, sum(n_rows), kr, "row classes") if kr > 1 else np.zeros(sum(n_rows), np.int64)
    parents = [np.full(r, -1, dtype=np.int64) for r in n_rows]
    if refs:
        flags = _split(_read_labels(reader, sum(n_rows), 2, "reference flags"), n_rows)
        parents = _unpack_parents(reader.take(reader.varint("row references"), "row references"), flags,
                                  reader.what)
    plan = Plan(kr, kc, bool(refs), _split(cols, n_cols), _split(rows, n_rows), parents)
    depth = [levels(p, reader.what) for p in parents]
    info = np.iinfo(np.dtype(dtype))
    tables: list[tuple[SymbolModel, int] | None] = []
    for _ in range(plan.contexts):
        present = reader.varint("context table")
        if present > 1:
            raise reader.fail("context table flag is not 0 or 1")
        tables.append((read_model(reader, int(info.min), int(info.max)), reader.varint("context length"))
                      if present else None)
    return StreamHead(plan, depth, tables)


def decode_stream(head: StreamHead, shapes: list[tuple[int, int]], loose_count: int, take, what: str
                  ) -> tuple[list[np.ndarray], np.ndarray]:
    """The matrices (int32, `shapes`) and the non-matrix values of a stream; `take(n)` hands out the next `n`
    coded bytes. Decoding runs level by level through the reference forest, one rANS call per context and level."""
    decoders = [SymbolDecoder(take(t[1]), t[0], what) if t else None for t in head.tables]

    def pull(c: int, count: int) -> np.ndarray:
        if decoders[c] is None:
            if count:
                raise PgolfError(f"{what} is corrupt: symbols in a context without a table")
            return np.zeros(0, dtype=np.int32)
        return decoders[c].take(count)

    plan, depth = head.plan, head.depth
    mats = [np.zeros(s, dtype=np.int32) for s in shapes]
    top = max((int(d.max()) for d in depth if d.size), default=0)
    for level in range(top + 1):
        picks = [(m, np.flatnonzero(depth[m] == level)) for m in range(len(shapes))]
        picks = [(m, r) for m, r in picks if r.size and shapes[m][1]]
        if not picks:
            continue
        ctx = np.concatenate([element_contexts(plan, m, mats[m], r).ravel() for m, r in picks])
        order, bounds = _grouped(ctx, plan.contexts)
        flat = np.empty(ctx.size, dtype=np.int32)
        for c in np.flatnonzero(np.diff(bounds)):
            run = slice(bounds[c], bounds[c + 1])
            flat[run if order is None else order[run]] = pull(int(c), run.stop - run.start)
        pos = 0
        for m, r in picks:
            n = r.size * shapes[m][1]
            mats[m][r] = flat[pos:pos + n].reshape(r.size, shapes[m][1])
            pos += n
    loose = pull(plan.contexts - 1, loose_count)
    for d in decoders:
        if d is not None:
            d.finish()
    return mats, loose
