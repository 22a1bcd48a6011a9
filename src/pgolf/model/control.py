"""Names of the model's control tensors, importable without the model.

Control tensors are the small per-channel or scalar parameters that steer the blocks (scales, mixes, gains, gates,
skip weights). The optimizer groups train them with Adam at `optim.scalar_lr` instead of Muon, and the int8 export
keeps them in float32 (docs/rules.md#artifact-accounting). Matching is by substring, so plural names such as
`skip_weights` match too. Kept apart from `pgolf.model.gpt` so that the optimizer and the quantizer do not import
the network to learn these names.
"""

CONTROL_PATTERNS = ("attn_scale", "mlp_scale", "resid_mix", "q_gain", "skip_weight", "skip_gate", "smear_",
                    "attn_gate", "lane_", "ve_layer_scale", "value_embed_scale")
