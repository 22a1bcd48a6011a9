"""The optimizer stage's named choices, importable without torch: Newton-Schulz coefficients, the matrix optimizer
(with `check_soap`), the gradient-clipping scope.

`pgolf.options` checks a config against them before anything imports torch (`pgolf config show`, a mistyped `--set`:
well under a second); `muon`, `soap` and `clip` import them from here, so the list a config is checked against is
the list the code runs. Whether heavyball is installed is asked of `importlib.util.find_spec`, which finds the
package without importing it (heavyball imports torch).
"""

from __future__ import annotations

from importlib.util import find_spec

from pgolf.config import OptimConfig
from pgolf.errors import PgolfError

NS_COEFFICIENTS = ("classic", "polar_express")  # `optim.muon_ns`: see muon.ns_schedule
MATRIX_OPTIMIZERS = ("muon", "soap")  # `optim.matrix_optimizer`: see soap
CLIP_SCOPES = ("global", "rank")  # `optim.grad_clip_scope`: see clip


def check_soap(cfg: OptimConfig) -> None:
    """PgolfError (one line) for SOAP with sharded Muon or without heavyball (`optim.matrix_optimizer` itself is
    checked against MATRIX_OPTIMIZERS by pgolf.options)."""
    if cfg.matrix_optimizer == "soap":
        if cfg.muon_sharded:
            raise PgolfError("config: optim.matrix_optimizer=soap trains the matrices without Muon; "
                             "set optim.muon_sharded=false")
        if find_spec("heavyball") is None:
            raise PgolfError("config: optim.matrix_optimizer=soap needs heavyball, which is not installed; "
                             "pip install heavyball (or pgolf[soap])")
