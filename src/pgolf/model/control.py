"""Control tensors, importable without the model.

Control tensors are the small per-channel or scalar parameters that steer the blocks (scales, mixes, gains, gates,
skip weights, lane mixes, the value-residual alpha, the bigram scale). The optimizer groups train them with Adam at
`optim.scalar_lr` instead of Muon, and the int8 export keeps them in float32 (docs/rules.md#artifact-accounting).
Which parameters they are is declared in `pgolf.model.roles` (the roles CONTROL and GATE); this module keeps the
names that the int8 policy and `cast_body` import.
"""

from pgolf.model.roles import CONTROL_PATTERNS, is_control  # noqa: F401  (re-exported)
