"""Phase timers: every second of a run is attributed to a named phase and written to result.json.

The challenge's budget covers training only (compile warm-up excluded, as in modded-nanogpt issue #19 and the
baseline); evaluation has its own budget. Recording every phase makes the accounting auditable.
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from typing import Callable, Iterator


class PhaseClock:
    """Accumulates wall-clock seconds per phase; `sync` (e.g. torch.cuda.synchronize) runs at phase edges."""

    def __init__(self, sync: Callable[[], None] | None = None) -> None:
        self.seconds: dict[str, float] = {}
        self._sync = sync or (lambda: None)

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        self._sync()
        start = time.perf_counter()
        try:
            yield
        finally:
            self._sync()
            self.add(name, time.perf_counter() - start)

    def add(self, name: str, seconds: float) -> None:
        self.seconds[name] = self.seconds.get(name, 0.0) + seconds

    def as_dict(self) -> dict[str, float]:
        return {k: round(v, 4) for k, v in self.seconds.items()}
