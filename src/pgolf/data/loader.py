"""Training batches with the official semantics, and whole-split reads for evaluation.

The baseline's loader (docs/techniques.md#baseline-data-and-distribution) reads the train shards in order, wrapping
forever; every micro-step
takes one contiguous span of (local_tokens + 1) * world_size tokens and gives rank r the r-th slice. Hence one rank
with grad_accum 2 sees exactly the tokens that two ranks with grad_accum 1 see, which keeps runs comparable across
world sizes.
"""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple, Sequence

import numpy as np
import torch

from pgolf.data.choices import check_loader_schedule  # noqa: F401  (re-exported; defined torch-free there)
from pgolf.data.segments import Segments, document_segments
from pgolf.data.shards import read_shard, shard_paths
from pgolf.errors import PgolfError, choose


class Batch(NamedTuple):
    """One micro-batch: inputs and targets [B, T], and where attention is cut (None: causal over each row)."""

    x: torch.Tensor
    y: torch.Tensor
    segments: Segments | None = None


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
            empty_visits = 0
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

    def next_batch(self, global_tokens: int, seq_len: int, grad_accum_steps: int) -> Batch:
        local = global_tokens // (self.world_size * grad_accum_steps)
        if local <= 0 or local % seq_len:
            raise PgolfError(f"per-rank micro-batch of {local} tokens is not a positive multiple of seq_len {seq_len}")
        span = local + 1
        chunk = self.stream.take(span * self.world_size)
        if self.vocab_size is not None and int(chunk.max()) >= self.vocab_size:
            raise PgolfError(f"{self.data_dir}: {self.split} shards hold token id {int(chunk.max())} but the model's "
                             f"vocabulary has {self.vocab_size} ids (tokenizer/shard mismatch)")
        piece = torch.from_numpy(chunk[self.rank * span:(self.rank + 1) * span].astype(np.int64))
        return Batch(piece[:-1].reshape(-1, seq_len), piece[1:].reshape(-1, seq_len))

    def state_dict(self) -> dict:
        return self.stream.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.stream.load_state_dict(state)


def load_split(data_dir: str | Path, split: str) -> np.ndarray:
    """The whole split as one uint16 array (for evaluation)."""
    parts = [np.asarray(read_shard(f)) for f in shard_paths(data_dir, split)]
    return np.concatenate(parts) if len(parts) > 1 else np.array(parts[0])


class ShuffledSequenceLoader:
    """Random windows instead of a stream (PR #1394's ShuffledSequenceLoader, docs/techniques.md#data-loaders).

    Rank r owns shards files[r::world] (all shards when there are fewer shards than ranks). Each shard gets a random
    phase offset in [0, seq_len) and a random permutation of its (seq_len + 1)-token windows; every sequence comes
    from a shard drawn in proportion to the windows it has left, so batches mix shards and documents. The generator
    is PCG64 seeded by (seed, rank): deterministic per seed, different per rank. When every window has been used the
    epoch restarts with fresh offsets and permutations.
    """

    def __init__(self, data_dir: str | Path, split: str = "train", rank: int = 0, world_size: int = 1,
                 vocab_size: int | None = None, seed: int = 0, seq_len: int = 1024) -> None:
        files = shard_paths(data_dir, split)
        self.files = files[rank::world_size] if len(files) >= world_size else files
        self.rank, self.world_size, self.vocab_size, self.seq_len = rank, world_size, vocab_size, seq_len
        self.data_dir, self.split = Path(data_dir), split
        self.rng = np.random.Generator(np.random.PCG64([seed, rank]))
        self._shards = [read_shard(f) for f in self.files]
        self._new_epoch()

    def _new_epoch(self) -> None:
        self.offsets, self.perms, self.cursor = [], [], []
        for tokens in self._shards:
            offset = int(self.rng.integers(0, self.seq_len)) if len(tokens) > 2 * (self.seq_len + 1) else 0
            n = max(0, (len(tokens) - offset - 1) // self.seq_len)
            self.offsets.append(offset)
            self.perms.append(self.rng.permutation(n))
            self.cursor.append(0)
        if not sum(len(p) for p in self.perms):
            raise PgolfError(f"{self.data_dir}: {self.split} shards hold no window of {self.seq_len + 1} tokens")

    def _window(self) -> np.ndarray:
        left = np.array([len(p) - c for p, c in zip(self.perms, self.cursor)], dtype=np.float64)
        if left.sum() == 0:
            self._new_epoch()
            left = np.array([len(p) for p in self.perms], dtype=np.float64)
        i = int(self.rng.choice(len(left), p=left / left.sum()))
        start = self.offsets[i] + int(self.perms[i][self.cursor[i]]) * self.seq_len
        self.cursor[i] += 1
        return np.asarray(self._shards[i][start:start + self.seq_len + 1])

    def next_batch(self, global_tokens: int, seq_len: int, grad_accum_steps: int) -> Batch:
        local = global_tokens // (self.world_size * grad_accum_steps)
        if seq_len != self.seq_len or local <= 0 or local % seq_len:
            raise PgolfError(f"shuffled loader: micro-batch of {local} tokens must be a positive multiple of its "
                             f"seq_len {self.seq_len} (got seq_len {seq_len})")
        rows = np.stack([self._window() for _ in range(local // seq_len)])
        if self.vocab_size is not None and int(rows.max()) >= self.vocab_size:
            raise PgolfError(f"{self.data_dir}: {self.split} shards hold token id {int(rows.max())} but the model's "
                             f"vocabulary has {self.vocab_size} ids (tokenizer/shard mismatch)")
        t = torch.from_numpy(rows.astype(np.int64))
        return Batch(t[:, :-1], t[:, 1:])

    def state_dict(self) -> dict:
        return {"rng": self.rng.bit_generator.state, "offsets": list(self.offsets),
                "perms": [p.copy() for p in self.perms], "cursor": list(self.cursor)}

    def load_state_dict(self, state: dict) -> None:
        self.rng.bit_generator.state = state["rng"]
        self.offsets, self.cursor = list(state["offsets"]), list(state["cursor"])
        self.perms = [p.copy() for p in state["perms"]]


class DocumentPackingLoader(DistributedTokenLoader):
    """The record's packed batches: the baseline's stream, with attention cut at document boundaries
    (PR #1530's packing loader, as the 1.0611 record uses it; docs/techniques.md#data-loaders).

    Each rank's micro-batch is the same contiguous span the sequential loader gives it, kept whole as one packed
    row [1, local_tokens] instead of rows of seq_len, plus its `Segments`: cut at every BOS and every seq_len tokens
    into a document (`pgolf/data/segments.py`). Every token is trained on, document tails included, and no token
    attends across a document boundary. Differences from the record, both negligible: the record starts each shard at
    its first BOS and skips a shard's remainder shorter than one global span; this stream reads straight through.
    """

    def __init__(self, data_dir: str | Path, split: str = "train", rank: int = 0, world_size: int = 1,
                 vocab_size: int | None = None, bos_id: int = 1) -> None:
        super().__init__(data_dir, split, rank, world_size, vocab_size)
        self.bos_id = bos_id

    def next_batch(self, global_tokens: int, seq_len: int, grad_accum_steps: int) -> Batch:
        x, y, _ = super().next_batch(global_tokens, seq_len, grad_accum_steps)
        x, y = x.reshape(1, -1), y.reshape(1, -1)
        return Batch(x, y, document_segments(x, self.bos_id, seq_len))


class PrefetchingLoader:
    """Any loader, with the next `depth` batches prepared in a background thread (file reads, the vocabulary check,
    document segments) and, on CUDA, copied into pinned memory so the host-to-device copy can overlap compute.

    The batches and the saved position are exactly the wrapped loader's: every prepared batch remembers the loader
    state it was cut from, `state_dict` returns the state of the next batch not yet handed out, and a request with
    different arguments (a sequence-length schedule stage change) throws the prepared batches away and rewinds.
    """

    def __init__(self, loader, depth: int = 2, pin: bool = False) -> None:
        from concurrent.futures import ThreadPoolExecutor

        self.loader, self.depth, self.pin = loader, depth, pin
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="pgolf-loader")
        self._queue: list = []  # futures of (args, state before the batch, batch), in stream order
        self._args: tuple | None = None

    def _prepare(self, args: tuple):
        import copy

        state = copy.deepcopy(self.loader.state_dict())
        batch = self.loader.next_batch(*args)
        if self.pin:
            batch = Batch(batch.x.pin_memory(), batch.y.pin_memory(), batch.segments)
        return args, state, batch

    def _rewind(self) -> None:
        """Drop the prepared batches and put the loader back where the first of them started."""
        if self._queue:
            _, state, _ = self._queue[0].result()
            for future in self._queue[1:]:
                future.result()
            self._queue.clear()
            self.loader.load_state_dict(state)

    def next_batch(self, global_tokens: int, seq_len: int, grad_accum_steps: int) -> Batch:
        args = (global_tokens, seq_len, grad_accum_steps)
        if args != self._args:
            self._rewind()
            self._args = args
        while len(self._queue) < self.depth + 1:
            self._queue.append(self._pool.submit(self._prepare, args))
        _, _, batch = self._queue.pop(0).result()
        self._queue.append(self._pool.submit(self._prepare, args))
        return batch

    def state_dict(self) -> dict:
        if self._queue:
            return self._queue[0].result()[1]
        return self.loader.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self._rewind()
        self.loader.load_state_dict(state)

    def close(self) -> None:
        self._rewind()
        self._pool.shutdown(wait=True)


# `train.loader` -> loader factory (cfg, data_dir, rank, world_size); pgolf.options checks the name against
# choices.LOADER_NAMES, torch-free, which tests/test_options.py holds equal to these keys.
LOADERS = {
    "sequential": lambda cfg, data_dir, rank, world: DistributedTokenLoader(data_dir, "train", rank, world,
                                                                            cfg.model.vocab_size),
    "shuffled": lambda cfg, data_dir, rank, world: ShuffledSequenceLoader(
        data_dir, "train", rank, world, cfg.model.vocab_size, seed=cfg.train.seed, seq_len=cfg.train.train_seq_len),
    "packed": lambda cfg, data_dir, rank, world: DocumentPackingLoader(data_dir, "train", rank, world,
                                                                       cfg.model.vocab_size, cfg.model.bos_id),
}


def make_loader(cfg, data_dir: str | Path, rank: int, world_size: int, pin: bool = False):
    """The training loader `cfg.train.loader` names (sequential, the baseline; shuffled; packed), preparing
    `cfg.train.prefetch` batches ahead in a background thread (0: none), in pinned memory when `pin`."""
    loader = choose(LOADERS, cfg.train.loader, "train.loader")(cfg, data_dir, rank, world_size)
    return PrefetchingLoader(loader, cfg.train.prefetch, pin) if cfg.train.prefetch > 0 else loader
