"""Progress of long phases, where people look: a tqdm bar on a terminal, periodic log lines anywhere else.

Under nohup, `tmux pipe-pane`, SLURM or a CI log, stderr is a file and a tqdm bar is either silent (pgolf used to
disable it) or a stream of carriage returns. There a `LineProgress` writes one plain line every `every` seconds
(`PGOLF_PROGRESS_SECONDS`, default 30) with what a bar shows: done/total, percent, elapsed, rate and ETA, e.g.

    scoring phased-ttt: 12,288/66,243 tok (19%), 41s elapsed, 300 tok/s, ETA 180s

and a last line when the phase ends, if it printed any. A phase shorter than `every` prints nothing.
"""

from __future__ import annotations

import os
import sys
import time
from typing import Iterable, Iterator, TextIO

DEFAULT_EVERY = 30.0


def _every() -> float:
    try:
        return max(float(os.environ.get("PGOLF_PROGRESS_SECONDS", DEFAULT_EVERY)), 0.0)
    except ValueError:
        return DEFAULT_EVERY


class LineProgress:
    """tqdm's `update`/`close` (and iteration) as a line every `every` seconds on `file`."""

    def __init__(self, total: int | None, desc: str, unit: str, file: TextIO, every: float,
                 clock=time.monotonic) -> None:
        self.total, self.desc, self.unit, self.file, self.every = total, desc, unit, file, every
        self.clock = clock
        self.n = 0
        self.start = self.last = clock()
        self.lines = 0

    def update(self, n: int = 1) -> None:
        self.n += n
        now = self.clock()
        if now - self.last >= self.every:
            self.last = now
            self._line(now)

    def close(self) -> None:
        if self.lines:
            self._line(self.clock(), done=True)

    def _line(self, now: float, done: bool = False) -> None:
        elapsed = now - self.start
        rate = self.n / elapsed if elapsed > 0 else 0.0
        text = f"{self.desc}: {self.n:,}"
        if self.total:
            text += f"/{self.total:,} {self.unit} ({100 * self.n / self.total:.0f}%)"
        else:
            text += f" {self.unit}"
        text += f", {elapsed:.0f}s elapsed, {rate:,.1f} {self.unit}/s"
        if done:
            text += ", done"
        elif self.total and rate > 0:
            text += f", ETA {(self.total - self.n) / rate:.0f}s"
        print(text, file=self.file, flush=True)
        self.lines += 1


class _Silent:
    def update(self, n: int = 1) -> None:
        pass

    def close(self) -> None:
        pass


def progress_bar(total: int | None, desc: str, unit: str, *, enabled: bool = True, file: TextIO | None = None,
                 every: float | None = None):
    """An object with `update(n)` and `close()`: a tqdm bar when `file` (stderr) is a terminal, a `LineProgress`
    otherwise, nothing when not `enabled` (other ranks, --quiet)."""
    file = sys.stderr if file is None else file
    if not enabled:
        return _Silent()
    if getattr(file, "isatty", lambda: False)():
        from tqdm import tqdm

        return tqdm(total=total, desc=desc, unit=unit, file=file)
    return LineProgress(total, desc, unit, file, _every() if every is None else every)


def track(items: Iterable, desc: str, unit: str, *, total: int | None = None, enabled: bool = True,
          file: TextIO | None = None) -> Iterator:
    """`items`, reporting one unit per item as `progress_bar` does (a bar on a terminal, lines elsewhere)."""
    if total is None and hasattr(items, "__len__"):
        total = len(items)  # type: ignore[arg-type]
    bar = progress_bar(total, desc, unit, enabled=enabled, file=file)
    try:
        for item in items:
            yield item
            bar.update(1)
    finally:
        bar.close()
