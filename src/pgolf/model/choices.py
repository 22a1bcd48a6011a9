"""The model stage's named choices, importable without torch: attention gates, parallel residual modes, MLP
activations, the Triton kernel switch, the body dtype and the LoRA targets of test-time training.

`pgolf.options` checks a config against them before anything imports torch (`pgolf config show`, a mistyped `--set`:
well under a second); the modules that implement each choice (`attention`, `gpt`, `kernels`, `precision`, `lora`)
import them from here, so the list a config is checked against is the list the code runs.
"""

from __future__ import annotations

from pgolf.model.roles import Role

ATTN_GATES = ("none", "out", "gated", "sparse")  # `model.attn_gate`: see attention.AttentionGate
# `model.mlp_activation` -> the negative slope of the leaky ReLU that is squared (0: Primer's relu^2).
MLP_ACTIVATIONS = {"relu2": 0.0, "leaky_relu2": 0.5}
# `model.parallel_mode`: how attention and MLP are wired from layer `parallel_start` on (see gpt.Block).
PARALLEL_MODES = ("none", "gptj", "two_lane")
KERNEL_MODES = ("auto", "on", "off")  # `train.kernels`: see kernels.wanted
BODY_DTYPES = ("auto", "fp32", "bf16")  # `train.body_dtype`: see precision.body_dtype

# LoRA target -> the role of the weight whose output the adapter corrects (every adapter reads a model_dim-wide
# input). `o` and `mlp` go around the whole attention and MLP, so they end where their output projection does;
# `head` is the untied head or, tied, the embedding (EMBED) used as one. The adapters themselves have role LORA.
LORA_TARGET_ROLES: dict[str, Role] = {"q": Role.ATTN_Q, "k": Role.ATTN_K, "v": Role.ATTN_V, "o": Role.ATTN_PROJ,
                                      "mlp": Role.MLP_PROJ, "head": Role.HEAD}
LORA_TARGETS = tuple(LORA_TARGET_ROLES)  # `ttt.targets` names some of these (lora.BatchedLoRA)
