"""Score-first test-time training (TTT; docs/rules.md#score-first-test-time-training,
docs/techniques.md#test-time-training): the TTT modes of `pgolf.eval.names.TTT_MODES` on the eval mode API of
`pgolf.eval.modes`, built from the `[ttt]` config section (`pgolf.config.TTTConfig`).

- `pgolf.eval.ttt_gate`: the legality gate (scored positions) every TTT mode releases tokens through;
- `pgolf.eval.ttt_lora`: `lora-ttt` and `phased-ttt`, the records' batched per-document LoRA with global SGD phases;
- `pgolf.eval.ttt_sgd`: `sgd-ttt`, chunked full-model SGD;
- `pgolf.eval.ttt_optim`: what their learners share (the optimizer factory, the cosine LR, `frozen`).
"""

from __future__ import annotations

import functools

from pgolf.config import TTTConfig
from pgolf.eval.names import TTT_MODES  # noqa: F401  (re-exported: the modes built here)
from pgolf.eval.ttt_lora import BatchedLoRAMode, PhasedLoRAMode
from pgolf.eval.ttt_sgd import SGDTTTMode

# TTT mode name -> factory (settings, compile, seq_len, stride, bos_id).
TTT_MODE_FACTORIES = {
    "lora-ttt": lambda s, compile, seq_len, stride, bos_id: BatchedLoRAMode(seq_len, s, bos_id, compile),
    "sgd-ttt": lambda s, compile, seq_len, stride, bos_id: SGDTTTMode(seq_len, s, bos_id, stride),
    "phased-ttt": lambda s, compile, seq_len, stride, bos_id: PhasedLoRAMode(seq_len, s, bos_id, compile),
}


def ttt_factories(s: TTTConfig, compile: str = "auto") -> dict:
    """Factories for `pgolf.eval.modes.make_mode(extra=...)`, bound to the `[ttt]` settings `s` and to `compile`
    (`eval.compile`: whether the LoRA modes compile their forward)."""
    return {name: functools.partial(factory, s, compile) for name, factory in TTT_MODE_FACTORIES.items()}
