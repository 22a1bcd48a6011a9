""""Did you mean": the known names closest to a mistyped one, so a one-line error says what was probably meant.

Closeness is difflib's ratio (`difflib.get_close_matches`, the Python standard library; Ratcliff/Obershelp matching)
with its default cutoff 0.6, keeping up to three names within 0.1 of the closest (so `train.iteratons` finds
`train.iterations` alone, not `train.threads` too); `slidng` finds `sliding`, and a name far from every known one
finds nothing (the error then lists the known names instead).
"""

from __future__ import annotations

import difflib
from typing import Iterable


def did_you_mean(word: str, known: Iterable[str], quote: bool = False) -> str:
    """"; did you mean a or b?" (`quote`: the names as reprs, like values) to append to an error, or "" when no known
    name is close to `word`."""
    close = difflib.get_close_matches(word, list(known), n=3)
    ratios = [difflib.SequenceMatcher(None, word, name).ratio() for name in close]
    close = [repr(name) if quote else name for name, r in zip(close, ratios) if r >= ratios[0] - 0.1]
    return f"; did you mean {' or '.join(close)}?" if close else ""
