"""Causal n-gram hints (pgolf/eval/ngram.py) against plain dict walks of their definitions: streams with many repeats,
edge cases, forced and real hash collisions, causality, a real FineWeb prefix, and the CUDA path."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from pgolf.errors import PgolfError
from pgolf.eval import ngram
from pgolf.eval.ngram import WEAK_COEF, WEAK_PAIR_MIX, ngram_hints

pytestmark = pytest.mark.usefixtures("one_thread")

U64 = (1 << 64) - 1


def reference_exact(tokens, order: int) -> tuple[np.ndarray, np.ndarray, int]:
    """The definition, walked in stream order: per exact context, the continuation counts and the top token, which
    changes only when a count strictly beats the top count."""
    toks = [int(x) for x in tokens]
    n, ctx_len = len(toks), order - 1
    token, share, seen = np.zeros(n, np.int64), np.zeros(n, np.float32), 0
    table: dict[tuple, list] = {}  # context -> [counts, total, top token, top count]
    for p in range(ctx_len, n):
        state = table.setdefault(tuple(toks[p - ctx_len:p]), [{}, 0, 0, 0])
        counts, x = state[0], toks[p]
        if state[1]:
            token[p], share[p], seen = state[2], np.float32(state[3]) / np.float32(state[1]), seen + 1
        counts[x] = counts.get(x, 0) + 1
        state[1] += 1
        if counts[x] > state[3]:
            state[2], state[3] = x, counts[x]
    return token, share, seen


def reference_hashed(tokens, order: int) -> tuple[np.ndarray, np.ndarray, int]:
    """PR #2135's tables as its online_ngram_state.c keeps them: a global pair-count table and a context table, both
    keyed by the XOR hash in uint64."""
    toks = [int(x) for x in tokens]
    n, ctx_len = len(toks), order - 1
    token, share, seen = np.zeros(n, np.int64), np.zeros(n, np.float32), 0
    pairs: dict[int, int] = {}
    contexts: dict[int, list] = {}  # context key -> [total, top count, top token]
    for p in range(ctx_len, n):
        key = 0
        for j in range(ctx_len):
            key ^= toks[p - ctx_len + j] * WEAK_COEF[j]
        x = toks[p]
        pair = ((key * WEAK_PAIR_MIX) ^ (x * WEAK_COEF[ctx_len % 32])) & U64
        pairs[pair] = count = pairs.get(pair, 0) + 1
        state = contexts.get(key)
        if state is None:
            contexts[key] = [1, count, x]
            continue
        token[p], share[p], seen = state[2], np.float32(state[1]) / np.float32(state[0]), seen + 1
        state[0] += 1
        if count > state[1]:
            state[1], state[2] = count, x
    return token, share, seen


def reference(tokens, order: int, hashed: bool):
    return (reference_hashed if hashed else reference_exact)(tokens, order)


def assert_matches(hints, expected) -> None:
    token, share, seen = expected
    np.testing.assert_array_equal(hints.token.cpu().numpy(), token)
    np.testing.assert_array_equal(hints.share.cpu().numpy().view(np.int32), share.view(np.int32))  # bit for bit
    assert hints.seen == seen


def repetitive(rng: np.random.Generator, n: int, vocab: int) -> np.ndarray:
    """Random tokens with copies of earlier stretches pasted in, so long contexts repeat too."""
    out = rng.integers(0, vocab, n)
    for _ in range(n // 40):
        length, src = int(rng.integers(2, 30)), int(rng.integers(0, n))
        dst = int(rng.integers(0, n))
        piece = out[src:src + length].copy()
        out[dst:dst + piece.size] = piece[:n - dst]
    return out


@pytest.mark.parametrize("hashed", [False, True])
def test_matches_the_definition_on_repetitive_streams(hashed):
    rng = np.random.default_rng(1 + hashed)
    for case in range(150):
        vocab, order, n = int(rng.integers(2, 7)), int(rng.integers(2, 7)), int(rng.integers(0, 600))
        tokens = repetitive(rng, n, vocab)
        given_as = (tokens.astype(np.uint16), torch.from_numpy(tokens), tokens.astype(np.int32))[case % 3]
        assert_matches(ngram_hints(given_as, order, hashed=hashed), reference(tokens, order, hashed))


@pytest.mark.parametrize("hashed", [False, True])
def test_large_ids_and_long_contexts(hashed):
    """Ids past 2^15 (the exact rows compare them as int16) and up to 65535; orders up to 33 (PR #2135's limit)."""
    rng = np.random.default_rng(7)
    for order in (2, 9, 17, 33):
        tokens = 65_535 - repetitive(rng, 3000, 4) * 20_000
        assert_matches(ngram_hints(tokens, order, hashed=hashed), reference(tokens, order, hashed))


@pytest.mark.parametrize("hashed", [False, True])
@pytest.mark.parametrize("tokens,order", [
    ([], 2), ([5], 2), ([1, 2], 3), ([1, 2, 3], 3), ([1, 2, 1], 2),
    ([4] * 50, 2), ([4] * 50, 6), ([0] * 7, 7), ([0] * 8, 7), ([3, 1] * 30, 4),
])
def test_edge_cases(tokens, order, hashed):
    hints = ngram_hints(np.array(tokens, dtype=np.int64), order, hashed=hashed)
    assert hints.token.shape == hints.share.shape == (len(tokens),)
    assert hints.token.dtype == torch.int64 and hints.share.dtype == torch.float32
    assert_matches(hints, reference(tokens, order, hashed))


def test_all_equal_tokens_hint_themselves_with_full_share():
    hints = ngram_hints(np.full(40, 9), 4)
    assert hints.seen == 36
    assert (hints.token[4:] == 9).all() and (hints.share[4:] == 1.0).all() and (hints.share[:4] == 0).all()


def test_ties_keep_the_token_that_reached_the_count_first():
    # (1,) is followed by 2, 3, 3, 2, 0: 3 ties 2 at one (2 stays), beats it at two, then 2 ties at two (3 stays)
    tokens = [1, 2, 1, 3, 1, 3, 1, 2, 1, 0]
    hints = ngram_hints(np.array(tokens), 2)
    assert hints.token[[3, 5, 7, 9]].tolist() == [2, 2, 3, 3]
    assert hints.share[[3, 5, 7, 9]].tolist() == [1.0, 0.5, float(np.float32(2) / np.float32(3)), 0.5]


@pytest.mark.parametrize("hashed", [False, True])
def test_forced_hash_collisions_stay_exact(monkeypatch, hashed):
    """With the sort's hash bits zeroed every item shares one hash group: every neighbour is compared and every group
    re-split by its identity. With a context hash of only three values, different contexts share keys as well."""
    monkeypatch.setattr(ngram, "_GOLDEN", 0)
    monkeypatch.setattr(ngram, "_context_hash", lambda t, ctx_len: t[:t.numel() - ctx_len] % 3)
    rng = np.random.default_rng(3)
    for _ in range(20):
        vocab, order, n = int(rng.integers(2, 7)), int(rng.integers(2, 7)), int(rng.integers(0, 400))
        tokens = repetitive(rng, n, vocab)
        assert_matches(ngram_hints(tokens, order, hashed=hashed), reference(tokens, order, hashed))


def weak_collision(vocab: int = 64) -> tuple[tuple[int, int], tuple[int, int]]:
    """Two different order-3 contexts with the same PR #2135 key, by brute force."""
    ids = np.arange(vocab, dtype=np.uint64)
    keys = ((ids[:, None] * np.uint64(WEAK_COEF[0])) ^ (ids[None, :] * np.uint64(WEAK_COEF[1]))).ravel()
    order = np.argsort(keys, kind="stable")
    i = int(np.flatnonzero(keys[order][1:] == keys[order][:-1])[0])
    a, b = int(order[i]), int(order[i + 1])
    return divmod(a, vocab), divmod(b, vocab)


def test_hashed_mode_merges_a_real_xor_collision():
    (a, b), (c, d) = weak_collision()
    assert (a, b) != (c, d) and a * WEAK_COEF[0] ^ b * WEAK_COEF[1] == c * WEAK_COEF[0] ^ d * WEAK_COEF[1]
    tokens = np.array([a, b, 63, 0, 63, 0, c, d, 5, 1, 1, 1], dtype=np.int64)  # (c, d) never occurred before
    exact, hashed = ngram_hints(tokens, 3), ngram_hints(tokens, 3, hashed=True)
    assert (exact.token[8].item(), exact.share[8].item()) == (0, 0.0)
    assert (hashed.token[8].item(), hashed.share[8].item()) == (63, 1.0)  # (a, b)'s continuation
    assert_matches(exact, reference_exact(tokens, 3))
    assert_matches(hashed, reference_hashed(tokens, 3))
    assert hashed.seen == exact.seen + 1


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(0, 3), min_size=1, max_size=120), st.integers(2, 5), st.data(), st.booleans())
def test_hints_are_causal(tokens, order, data, hashed):
    q = data.draw(st.integers(0, len(tokens) - 1))
    changed = list(tokens)
    changed[q] = data.draw(st.integers(0, 3))
    before, after = ngram_hints(np.array(tokens), order, hashed=hashed), ngram_hints(np.array(changed), order,
                                                                                    hashed=hashed)
    assert torch.equal(before.token[:q + 1], after.token[:q + 1])
    assert torch.equal(before.share[:q + 1], after.share[:q + 1])


def test_rejects_bad_input():
    with pytest.raises(PgolfError, match="order"):
        ngram_hints(np.zeros(10), 1)
    with pytest.raises(PgolfError, match="order"):
        ngram_hints(np.zeros(10), 34, hashed=True)
    with pytest.raises(PgolfError, match="1-D"):
        ngram_hints(np.zeros((2, 5)), 2)
    with pytest.raises(PgolfError, match="65536"):
        ngram_hints(np.array([0, 65_536]), 2)
    with pytest.raises(PgolfError, match="65536"):
        ngram_hints(torch.tensor([3, -1]), 2)


def fineweb_prefix(shared_data, n: int) -> np.ndarray:
    """The challenge's own FineWeb documents, CaseOps-encoded with the SP8192 CaseOps tokenizer (BOS per document)."""
    from pgolf.data.caseops import encode_caseops
    from pgolf.data.corpus import iter_documents
    from pgolf.data.tokenizer import encode_documents, load_tokenizer

    sp = load_tokenizer(shared_data / "tokenizers" / "fineweb_8192_bpe_lossless_caps_caseops_v1_reserved.model")
    docs = [encode_caseops(d) for d in iter_documents(shared_data / "fineweb" / "challenge_docs_200.jsonl")]
    return np.concatenate(encode_documents(sp, docs, workers=2))[:n]


def test_real_fineweb_prefix(shared_data):
    # On these 200,000 tokens at order 16, 3,041 positions have a context seen before (2,938 with share >= 0.8). The
    # hashed mode hints differently at 2 positions (121,826 and 172,166): both contexts never occurred, but their
    # XOR key did, so it hints with share 1.0 where the exact mode has no hint. On the 47.9M-token real-text stream of
    # benchmarks/ngram_hints.py the modes differ at 72,038 positions (hashed 811,940 seen, exact 741,136), and at
    # 71,491 of them the hashed hint fires (share >= 0.8) where the exact one does not or vice versa.
    tokens = fineweb_prefix(shared_data, 200_000)
    assert tokens.size == 200_000
    exact, hashed = ngram_hints(tokens, 16), ngram_hints(tokens, 16, hashed=True)
    assert_matches(exact, reference_exact(tokens, 16))
    assert_matches(hashed, reference_hashed(tokens, 16))
    differ = (exact.token != hashed.token) | (exact.share != hashed.share)
    assert 0 < int(differ.sum()) <= exact.seen // 100
    assert hashed.seen > exact.seen


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("hashed", [False, True])
def test_cuda_matches_cpu(hashed):
    rng = np.random.default_rng(11)
    tokens = repetitive(rng, 200_000, 50) * 1000
    cpu = ngram_hints(tokens, 6, hashed=hashed)
    gpu = ngram_hints(tokens, 6, hashed=hashed, device="cuda")
    assert gpu.token.device.type == "cuda" and gpu.share.device.type == "cuda"
    assert torch.equal(cpu.token, gpu.token.cpu()) and torch.equal(cpu.share, gpu.share.cpu())
    assert cpu.seen == gpu.seen
    assert_matches(cpu, reference(tokens, 6, hashed))
