"""The loader's official semantics: 1 rank x 2 micro-steps sees what 2 ranks x 1 micro-step see."""

from __future__ import annotations

import numpy as np
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
    for (x1, y1), (x2, y2) in zip(micro, ranks):
        assert torch.equal(x1, x2) and torch.equal(y1, y2)
    x, y = micro[0]
    assert x.shape == (2, 16) and x.dtype == torch.int64
    assert torch.equal(x.flatten()[1:], y.flatten()[:-1])
