"""Where attention is cut in a packed batch: document segments.

The 1.0611 record trains on packed documents with attention cut at every BOS (PR #1530's packing loader with
variable-length attention, docs/techniques.md#data-loaders): a token attends only to earlier tokens of its own
document, and a document longer than `max_len` is cut into pieces of `max_len` counted from its BOS, each piece
attending only within itself. Rows of a [B, T] batch are also cut at their ends.

`document_segments` computes those cuts once per batch on the CPU (no device sync inside the model); the model
reads them in two forms: `cu_seqlens`/`max_seqlen` for CUDA's variable-length attention, and a padded gather of
each segment for the portable path (`pgolf.model.attention.segment_attention`). `positions` restarts at every
segment, so RoPE sees each document as if it were alone.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

# cu_seqlens is padded (with empty trailing segments) to a multiple of this, so compiled graphs see few shapes.
CU_BUCKET = 64


@dataclass(frozen=True)
class Segments:
    """The segments of one [B, T] batch, in the flattened B*T token order."""

    cu_seqlens: torch.Tensor  # int32 [k]: segment starts, then B*T repeated (padding to a multiple of CU_BUCKET)
    max_seqlen: int           # the `max_len` cut (fixed, so compiled CUDA graphs do not specialise on it)
    positions: torch.Tensor   # int64 [B, T]: each token's offset from its segment's start
    gather: torch.Tensor      # int64 [n, S]: the flat index of each segment's tokens, padded at the end
    valid: torch.Tensor       # bool [n, S]: which gather entries are real tokens
    count: int                # n, the number of real segments

    def to(self, device: torch.device | str) -> "Segments":
        """The same segments on `device`. The length of `cu_seqlens` (a multiple of CU_BUCKET that follows the
        number of documents in the batch) is marked dynamic for torch.compile: the model is compiled with
        dynamic=False and fullgraph=True, and without the mark every new bucket would be a recompile during
        training, and past `torch._dynamo.config.recompile_limit` (8) graphs a hard error under fullgraph. The
        varlen kernels' fake implementations do not depend on that length, so one graph serves all of them."""
        import torch._dynamo  # not at import time: the data modules load without it

        move = lambda t: t.to(device, non_blocking=True)  # noqa: E731
        cu = move(self.cu_seqlens)
        torch._dynamo.maybe_mark_dynamic(cu, 0)
        return Segments(cu, self.max_seqlen, move(self.positions), move(self.gather), move(self.valid), self.count)


def segment_starts(ids: np.ndarray, bos_id: int, max_len: int) -> np.ndarray:
    """Boolean [B, T]: True where a segment starts (row start, BOS, or every `max_len` tokens into a document)."""
    rows, length = ids.shape
    start = ids == bos_id
    start[:, 0] = True
    if max_len > 0:
        idx = np.broadcast_to(np.arange(length), ids.shape)
        doc_start = np.maximum.accumulate(np.where(start, idx, 0), axis=1)
        start |= (idx - doc_start) % max_len == 0
    return start


def document_segments(ids: torch.Tensor | np.ndarray, bos_id: int, max_len: int) -> Segments:
    """Segments of a [B, T] (or [T]) token batch cut at BOS, row ends and every `max_len` tokens of a document."""
    array = np.asarray(ids.cpu() if isinstance(ids, torch.Tensor) else ids)
    if array.ndim == 1:
        array = array[None]
    rows, length = array.shape
    start = segment_starts(array, bos_id, max_len)
    flat_start = start.reshape(-1)
    idx = np.arange(rows * length)
    first = np.maximum.accumulate(np.where(flat_start, idx, 0))
    positions = (idx - first).reshape(rows, length)
    starts = np.flatnonzero(flat_start)
    lengths = np.diff(np.append(starts, rows * length))
    width = int(lengths.max())
    offsets = np.arange(width)
    valid = offsets[None, :] < lengths[:, None]
    gather = np.where(valid, starts[:, None] + offsets[None, :], 0)
    bounds = np.append(starts, rows * length)
    padded = -(-len(bounds) // CU_BUCKET) * CU_BUCKET
    cu = np.full(padded, rows * length, dtype=np.int32)
    cu[:len(bounds)] = bounds
    return Segments(cu_seqlens=torch.from_numpy(cu), max_seqlen=max_len if max_len > 0 else width,
                    positions=torch.from_numpy(positions.astype(np.int64)),
                    gather=torch.from_numpy(gather.astype(np.int64)), valid=torch.from_numpy(valid),
                    count=len(starts))
