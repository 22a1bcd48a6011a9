"""Training batches with the official semantics, and whole-split reads for evaluation.

The baseline's loader (CHALLENGE.md section 4) reads the train shards in order, wrapping forever; every micro-step
takes one contiguous span of (local_tokens + 1) * world_size tokens and gives rank r the r-th slice. Hence one rank
with grad_accum 2 sees exactly the tokens that two ranks with grad_accum 1 see, which keeps runs comparable across
world sizes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from pgolf.data.shards import read_shard, shard_paths
from pgolf.errors import PgolfError


class TokenStream:
    """Shards in order, wrapping around forever; position can be saved and restored."""

    def __init__(self, files: Sequence[Path]) -> None:
        if not files:
            raise PgolfError("token stream needs at least one shard")
        self.files = list(files)
        self.file_idx = 0
        self.pos = 0
        self.tokens = read_shard(self.files[0])

    def _advance(self) -> None:
        self.file_idx = (self.file_idx + 1) % len(self.files)
        self.pos = 0
        self.tokens = read_shard(self.files[self.file_idx])

    def take(self, n: int) -> np.ndarray:
        parts = []
        left = n
        empty_visits = 0
        while left > 0:
            avail = len(self.tokens) - self.pos
            if avail <= 0:
                empty_visits += 1
                if empty_visits > len(self.files):
                    raise PgolfError("training shards hold no tokens")
                self._advance()
                continue
            k = min(avail, left)
            parts.append(np.asarray(self.tokens[self.pos:self.pos + k]))
            self.pos += k
            left -= k
        return np.concatenate(parts) if len(parts) > 1 else parts[0]

    def state_dict(self) -> dict:
        return {"file_idx": self.file_idx, "pos": self.pos}

    def load_state_dict(self, state: dict) -> None:
        self.file_idx = int(state["file_idx"])
        self.tokens = read_shard(self.files[self.file_idx])
        self.pos = int(state["pos"])


class DistributedTokenLoader:
    """Per-rank (x, y) micro-batches cut from one shared stream (every rank reads the same stream)."""

    def __init__(self, data_dir: str | Path, split: str = "train", rank: int = 0, world_size: int = 1,
                 vocab_size: int | None = None) -> None:
        self.rank, self.world_size, self.vocab_size = rank, world_size, vocab_size
        self.data_dir, self.split = Path(data_dir), split
        self.stream = TokenStream(shard_paths(data_dir, split))

    def next_batch(self, global_tokens: int, seq_len: int, grad_accum_steps: int) -> tuple[torch.Tensor, torch.Tensor]:
        local = global_tokens // (self.world_size * grad_accum_steps)
        if local <= 0 or local % seq_len:
            raise PgolfError(f"per-rank micro-batch of {local} tokens is not a positive multiple of seq_len {seq_len}")
        span = local + 1
        chunk = self.stream.take(span * self.world_size)
        if self.vocab_size is not None and int(chunk.max()) >= self.vocab_size:
            raise PgolfError(f"{self.data_dir}: {self.split} shards hold token id {int(chunk.max())} but the model's "
                             f"vocabulary has {self.vocab_size} ids (tokenizer/shard mismatch)")
        piece = torch.from_numpy(chunk[self.rank * span:(self.rank + 1) * span].astype(np.int64))
        return piece[:-1].reshape(-1, seq_len), piece[1:].reshape(-1, seq_len)

    def state_dict(self) -> dict:
        return self.stream.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.stream.load_state_dict(state)


def load_split(data_dir: str | Path, split: str) -> np.ndarray:
    """The whole split as one uint16 array (for evaluation)."""
    parts = [np.asarray(read_shard(f)) for f in shard_paths(data_dir, split)]
    return np.concatenate(parts) if len(parts) > 1 else np.array(parts[0])
