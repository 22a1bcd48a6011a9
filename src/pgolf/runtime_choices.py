"""The named choices of `pgolf.runtime` (`train.device`, `train.compile`, `eval.compile`, `optim.muon_compile`),
importable without torch.

`pgolf.options` checks a config against them before anything imports torch, so `pgolf config show` and a mistyped
`--set` answer in a fraction of a second; `pgolf.runtime` imports them from here, so the list a config is checked
against is the list the code runs. Each stage keeps its own such module (`pgolf/<stage>/choices.py`).
"""

from __future__ import annotations

DEVICES = ("auto", "cpu", "cuda")  # `train.device`: auto picks CUDA when present
COMPILE_MODES = ("auto", "on", "off")  # `train.compile` (and eval's, Muon's): auto compiles on CUDA only
