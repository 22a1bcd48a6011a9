"""The loader's official semantics: 1 rank x 2 micro-steps sees what 2 ranks x 1 micro-step see."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pgolf.data.loader import DistributedTokenLoader, TokenStream
from pgolf.data.shards import shard_paths, write_shard


def _shards(tmp_path, sizes=(100, 37, 250)):
    start = 0
    for i, n in enumerate(sizes):
        write_shard(tmp_path / f"fineweb_train_{i:06d}.bin", np.arange(start, start + n) % 60000)
        start += n
    return tmp_path


def test_stream_wraps_and_restores(tmp_path):
    stream = TokenStream(shard_paths(_shards(tmp_path), "train"))
    first = stream.take(120)
    assert first.tolist() == list(range(120))
    state = stream.state_dict()
    a = stream.take(300)
    assert a[:267].tolist() == list(range(120, 387)) and a[267:].tolist() == list(range(33))
    stream.load_state_dict(state)
    assert stream.take(300).tolist() == a.tolist()


def test_one_rank_two_microsteps_equals_two_ranks(tmp_path):
    data = _shards(tmp_path)
    single = DistributedTokenLoader(data, rank=0, world_size=1)
    micro = [single.next_batch(64, 16, grad_accum_steps=2) for _ in range(2)]
    ranks = [DistributedTokenLoader(data, rank=r, world_size=2).next_batch(64, 16, grad_accum_steps=1)
             for r in range(2)]
    for (x1, y1, _), (x2, y2, _) in zip(micro, ranks):
        assert torch.equal(x1, x2) and torch.equal(y1, y2)
    x, y, segments = micro[0]
    assert segments is None
    assert x.shape == (2, 16) and x.dtype == torch.int64
    assert torch.equal(x.flatten()[1:], y.flatten()[:-1])


def _loader_dir(tmp_path, docs_per_shard=40, shards=3):
    from pgolf.data.shards import shard_name, write_shard
    rng = np.random.default_rng(0)
    d = tmp_path / "data"
    d.mkdir()
    for s in range(shards):
        toks = []
        for _ in range(docs_per_shard):
            toks += [1] + list(rng.integers(2, 50, size=int(rng.integers(5, 60))))
        write_shard(d / shard_name("train", s), np.array(toks, dtype=np.uint16))
    return d


def test_shuffled_loader_is_deterministic_per_seed_and_restorable(tmp_path):
    from pgolf.data.loader import ShuffledSequenceLoader
    d = _loader_dir(tmp_path)
    a = ShuffledSequenceLoader(d, seed=3, seq_len=16)
    b = ShuffledSequenceLoader(d, seed=3, seq_len=16)
    c = ShuffledSequenceLoader(d, seed=4, seq_len=16)
    xa, ya, _ = a.next_batch(128, 16, 1)
    xb = b.next_batch(128, 16, 1).x
    xc = c.next_batch(128, 16, 1).x
    assert torch.equal(xa, xb) and not torch.equal(xa, xc)
    assert torch.equal(xa[:, 1:], ya[:, :-1])  # targets are the next tokens
    state = a.state_dict()
    first = a.next_batch(128, 16, 1)[0]
    a.load_state_dict(state)
    assert torch.equal(a.next_batch(128, 16, 1)[0], first)
    r0 = ShuffledSequenceLoader(d, rank=0, world_size=2, seed=3, seq_len=16)
    r1 = ShuffledSequenceLoader(d, rank=1, world_size=2, seed=3, seq_len=16)
    assert [f.name for f in r0.files] != [f.name for f in r1.files]


def test_shuffled_loader_uses_every_window_once_per_epoch(tmp_path):
    from pgolf.data.loader import ShuffledSequenceLoader
    d = _loader_dir(tmp_path, shards=2)
    ld = ShuffledSequenceLoader(d, seed=1, seq_len=8)
    total = sum(len(p) for p in ld.perms)
    seen = set()
    for _ in range(total):
        i_before = list(ld.cursor)
        ld._window()
        i = next(k for k, (x, y) in enumerate(zip(i_before, ld.cursor)) if x != y)
        seen.add((i, int(ld.perms[i][ld.cursor[i] - 1])))
    assert len(seen) == total


def test_packed_loader_keeps_every_token_and_cuts_at_documents(tmp_path):
    """The packed row holds exactly the sequential loader's tokens (tails kept); segments start at each BOS and
    every seq_len tokens into a document."""
    from pgolf.data.loader import DocumentPackingLoader
    d = _loader_dir(tmp_path)
    packed, plain = DocumentPackingLoader(d, bos_id=1), DistributedTokenLoader(d)
    for _ in range(5):
        x, y, segments = packed.next_batch(4 * 32, 32, 1)
        px, py, _ = plain.next_batch(4 * 32, 32, 1)
        assert x.shape == (1, 128) and torch.equal(x, px.reshape(1, -1)) and torch.equal(y, py.reshape(1, -1))
        starts = segments.cu_seqlens[:segments.count].tolist()
        ids = x[0].tolist()
        for i in range(1, 128):
            new_doc = ids[i] == 1
            run = i - max([0] + [j for j in range(i) if ids[j] == 1])
            assert (i in starts) == (new_doc or run % 32 == 0), i
    state = packed.state_dict()
    again = packed.next_batch(4 * 32, 32, 1).x
    packed.load_state_dict(state)
    assert torch.equal(packed.next_batch(4 * 32, 32, 1).x, again)
    two = [DocumentPackingLoader(d, rank=r, world_size=2, bos_id=1).next_batch(4 * 32, 32, 1).x for r in (0, 1)]
    assert not torch.equal(two[0], two[1])


@pytest.mark.parametrize("kind", ["shuffled", "packed"])
def test_training_with_each_loader(tiny_data, tiny_config, tmp_path, kind):
    from pgolf.train.trainer import train
    result = train(tiny_config(f"train.loader={kind}"), tiny_data, tmp_path / kind, echo=None)
    assert result["steps"] == 6


@pytest.mark.parametrize("kind", ["sequential", "shuffled", "packed"])
def test_prefetching_gives_the_same_batches_and_positions(tmp_path, kind):
    """Prefetching changes nothing the trainer sees: batches, saved positions, restores, and a change of sequence
    length (a schedule stage) mid-stream."""
    from pgolf.data.loader import DocumentPackingLoader, PrefetchingLoader, ShuffledSequenceLoader
    d = _loader_dir(tmp_path)
    make = {"sequential": lambda: DistributedTokenLoader(d),
            "shuffled": lambda: ShuffledSequenceLoader(d, seed=2, seq_len=16),
            "packed": lambda: DocumentPackingLoader(d, bos_id=1)}[kind]
    plain, ahead = make(), PrefetchingLoader(make(), depth=3)
    lengths = [16] * 4 + ([16] * 3 if kind == "shuffled" else [32] * 3)
    saved = None
    for i, seq in enumerate(lengths):
        if i == 2:
            saved = (plain.state_dict(), ahead.state_dict())
            assert str(saved[0]) == str(saved[1])
        a, b = plain.next_batch(128, seq, 1), ahead.next_batch(128, seq, 1)
        assert torch.equal(a.x, b.x) and torch.equal(a.y, b.y)
        if a.segments is not None:
            assert torch.equal(a.segments.cu_seqlens, b.segments.cu_seqlens)
    plain.load_state_dict(saved[0])
    ahead.load_state_dict(saved[1])
    for seq in lengths[2:]:
        assert torch.equal(plain.next_batch(128, seq, 1).x, ahead.next_batch(128, seq, 1).x)
    ahead.close()
