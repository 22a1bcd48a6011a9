"""The bf16 model body, as the official baseline keeps its weights (docs/techniques.md#baseline-architecture).

The official script casts the whole model to bfloat16, then puts back in float32 every CastedLinear weight (cast to
the activation dtype per matmul, so Muon and the export see float32 matrices) and every low-dimensional or control
parameter (`restore_low_dim_params_to_fp32`). What stays bf16 is the embedding tables (token, value and bigram
embeddings): the residual stream that starts from them is bf16, which halves activation memory and traffic. pgolf
does the same with `cast_body`; `train.body_dtype` chooses it (auto: bf16 on CUDA, float32 elsewhere, where bf16
arithmetic is slower, not faster).

Caveat (unmeasured on a GPU so far): in the torch versions whose CUDA autocast lists `rms_norm` among its float32
ops (aten/src/ATen/autocast_mode.h, `AT_FORALL_FP32`; torch 2.13 registers an AutocastCUDA kernel for it), the first
`F.rms_norm` under autocast returns float32, so from there the residual stream is float32 in pgolf and in the
official script alike; only the tables and the matmuls stay bf16. (Attention then casts q and k back for the
varlen kernels: `pgolf.model.attention.flash_dtype`.)
"""

from __future__ import annotations

import torch
from torch import nn

from pgolf.model.layers import CastedLinear
from pgolf.model.choices import BODY_DTYPES  # noqa: F401  (re-exported; `train.body_dtype`: see body_dtype)
from pgolf.model.roles import is_control


def body_dtype(mode: str, device: torch.device) -> torch.dtype:
    """The dtype `train.body_dtype=mode` gives the model's embedding tables on `device`."""
    if mode == "bf16" or (mode == "auto" and device.type == "cuda"):
        return torch.bfloat16
    return torch.float32


def cast_body(model: nn.Module, dtype: torch.dtype) -> list[str]:
    """Cast every parameter to `dtype` except CastedLinear weights and low-dimensional or control parameters,
    which stay float32; returns the names of the parameters cast."""
    keep = {id(m.weight) for m in model.modules() if isinstance(m, CastedLinear)}
    cast = []
    for name, p in model.named_parameters():
        if id(p) in keep or p.ndim < 2 or is_control(name):
            p.data = p.data.float()
        elif p.dtype != dtype:
            p.data = p.data.to(dtype)
            cast.append(name)
    return cast
