"""The legality gate of the score-first TTT modes (docs/rules.md#score-first-test-time-training): conditions C1-C4
of issue #1017 by construction.

A TTT mode's `run` is the only code that reads the token stream. It scores (yields a chunk, so the scores are final),
records the scored positions in a `ScoredPositions` gate, and only then calls `adapt` with positions it has scored.
`adapt` asks the gate to `check` them, which refuses any position not yet scored, and the learners never see the
stream: they receive only the token values that `adapt` released. So a learner has no way to reach a token before it
is scored; `pgolf legality` (pgolf/eval/legality.py) audits the same modes from the outside. The one thing read
ahead of scoring is the document structure (where BOS tokens are, hence each document's length and first token),
which every document-isolated scorer reads, as the records do.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from pgolf.errors import PgolfError


@dataclass(frozen=True)
class ScoredTokens:
    """Token values at contiguous positions [first, first + len) whose scores are final. `train_from` is the
    offset of the first target a learner should take a loss on (earlier ones are context)."""

    first: int
    tokens: torch.Tensor  # int64 [n]
    train_from: int


class ScoredPositions:
    """The gate between the stream and the learners: which positions have been scored (yielded)."""

    def __init__(self, n_tokens: int, name: str) -> None:
        self.scored = np.zeros(n_tokens, dtype=bool)
        self.name = name
        self.releases = 0  # adapt calls let through: a run with none adapted nothing (`EvalMode.no_op`)

    def add(self, positions: np.ndarray) -> None:
        self.scored[positions] = True

    def check(self, positions: np.ndarray) -> None:
        pos = np.asarray(positions, dtype=np.int64)
        bad = pos[(pos < 1) | (pos >= len(self.scored))]
        if len(bad) == 0:
            bad = pos[~self.scored[pos]]
        if len(bad):
            raise PgolfError(f"{self.name}: refusing to adapt on positions that are not yet scored "
                             f"(first: {int(bad[0])}, {len(bad)} in all)")
        self.releases += 1
