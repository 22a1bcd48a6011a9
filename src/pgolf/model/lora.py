"""Batched test-time LoRA adapters of the one model (docs/techniques.md#per-document-lora-ttt).

The adapters are an option of the same forward, never a second network: `GPT.hidden(ids, lora=...)` and
`GPT.head(h, lora=...)` add each adapter's low-rank correction where the weight it adapts is applied. As the 1.0611
record's `BatchedTTTLoRA` (PR #1855, after PRs #1530/#1767) does:

- every batch row (one document) has its own adapters, so one batched forward adapts 64 documents independently;
- every virtual-layer slot has its own adapters: a looped layer applied three times gets three (slots count the
  applications in `GPT.hidden`'s encoder-then-decoder order, not the physical layers);
- targets: `q`, `k`, `v` (added to the projections' outputs), `o` (added to the attention output, reading the
  attention's normed input: a low-rank path around the whole attention), `mlp` (added to the MLP output, reading
  the MLP's normed input) and `head` (added to the logits before the softcap, reading the final hidden state; the
  head is the tied embedding, so it cannot take a weight hook).

delta(x) = (alpha / rank) * (x A^T) B^T, A [rows, rank, in] ~ U(-1/sqrt(in), 1/sqrt(in)), B [rows, out, rank] = 0,
so fresh adapters change nothing. `BatchedLoRA.take` gives a range of the rows alone, for a forward over only those
documents (TTT on the CPU leaves finished documents out).
"""

from __future__ import annotations

import functools
import math
from typing import Callable

import torch
from torch import nn

from pgolf.config import ModelConfig
# Target -> the role of the weight whose output the adapter corrects; the targets (`ttt.targets`) are checked
# without torch, so both are defined in pgolf.model.choices.
from pgolf.model.choices import LORA_TARGET_ROLES, LORA_TARGETS
from pgolf.model.roles import Role

# An adapter as the layers see it: (target name, input) -> correction to add to that target's output, or None.
Adapter = Callable[[str, torch.Tensor], "torch.Tensor | None"]


def lora_shapes(cfg: ModelConfig) -> dict[str, tuple[int, int]]:
    """(in, out) features of every target: in is the model width, out the output width of the weight it adapts."""
    dim = cfg.model_dim
    kv_dim = cfg.num_kv_heads * (dim // cfg.num_heads)
    out = {Role.ATTN_Q: dim, Role.ATTN_K: kv_dim, Role.ATTN_V: kv_dim, Role.ATTN_PROJ: dim, Role.MLP_PROJ: dim,
           Role.HEAD: cfg.vocab_size}
    return {target: (dim, out[role]) for target, role in LORA_TARGET_ROLES.items()}


def _key(target: str, slot: int) -> str:
    return target if target == "head" else f"{target}_{slot}"


class BatchedLoRA(nn.Module):
    """Adapters for `rows` documents on `targets` of every one of `slots` virtual layers (the head: one)."""

    def __init__(self, cfg: ModelConfig, *, rows: int, rank: int, slots: int, targets: tuple[str, ...],
                 alpha: float = 0.0, device: torch.device | None = None) -> None:
        super().__init__()
        shapes = lora_shapes(cfg)
        unknown = set(targets) - set(shapes)
        if unknown:
            raise ValueError(f"unknown LoRA targets {sorted(unknown)} (known: {', '.join(LORA_TARGETS)})")
        self.rows, self.rank = rows, rank
        self.scale = alpha / rank if alpha > 0 else 1.0
        self.a, self.b = nn.ParameterDict(), nn.ParameterDict()
        for target in LORA_TARGETS:  # a fixed order: initialisation draws in it
            if target not in targets:
                continue
            fan_in, fan_out = shapes[target]
            for slot in [0] if target == "head" else range(slots):
                self.a[_key(target, slot)] = nn.Parameter(torch.zeros(rows, rank, fan_in, device=device))
                self.b[_key(target, slot)] = nn.Parameter(torch.zeros(rows, fan_out, rank, device=device))

    @torch.no_grad()
    def draw_a(self, generator: torch.Generator) -> None:
        """A ~ U(-1/sqrt(in), 1/sqrt(in)), drawn on the CPU so every device and rank draws the same numbers."""
        for a in self.a.values():
            bound = 1.0 / math.sqrt(a.size(-1))
            a.copy_(torch.empty(a.shape).uniform_(-bound, bound, generator=generator))

    def at(self, slot: int, rows: slice | None = None) -> Adapter:
        """The adapter of virtual-layer `slot`, as the layers call it (`rows`: of those rows only)."""
        return functools.partial(self.delta, slot=slot, rows=rows)

    def delta(self, target: str, x: torch.Tensor, slot: int = 0, rows: slice | None = None) -> torch.Tensor | None:
        key = _key(target, slot)
        if key not in self.a:
            return None
        a, b = self.a[key], self.b[key]
        if rows is not None:
            a, b = a[rows], b[rows]
        a, b = a.to(x.dtype), b.to(x.dtype)
        return torch.bmm(torch.bmm(x, a.transpose(1, 2)), b.transpose(1, 2)) * self.scale

    def take(self, lo: int, hi: int) -> LoRARows:
        """Rows lo..hi-1 alone, for a forward over only those documents (`GPT.hidden`/`GPT.head` take it as they
        take the whole): each row's correction reads only its own adapters, so those rows compute what they would
        in the whole batch, and the other rows get zero gradients."""
        return LoRARows(self, slice(lo, hi))


class LoRARows:
    """A row range of a `BatchedLoRA` (its `take`): the same adapters, sliced; no copy, gradients reach the whole."""

    def __init__(self, lora: BatchedLoRA, rows: slice) -> None:
        self.lora, self.rows = lora, rows

    def at(self, slot: int) -> Adapter:
        return self.lora.at(slot, self.rows)


def with_adapter(y: torch.Tensor, adapter: Adapter | None, target: str, x: torch.Tensor) -> torch.Tensor:
    """`y` plus the adapter's correction for `target` computed from `x` (y itself without an adapter)."""
    if adapter is None:
        return y
    d = adapter(target, x)
    return y if d is None else y + d
