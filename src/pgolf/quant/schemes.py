"""Post-training quantization schemes: how each tensor of a state dict becomes a few small integer arrays.

`int8` follows the official baseline's rules (CHALLENGE.md 3.2):
- non-float tensors are stored as they are;
- float tensors of at most 65,536 elements stay float: fp32 when the name matches a control pattern, else fp16;
- larger 2-D tensors: symmetric int8 per row, clipped at the 99.99984th percentile of |w| in the row
  (`torch.quantile`, linear interpolation), scale = clip/127 floored at 1/127 and stored fp16;
- larger tensors of other ranks: one fp32 scale for the whole tensor, same clipping.
Quantized values are computed against the fp16-rounded scale that is stored, so dequantization (q * scale) is the
reconstruction the quantizer chose. New schemes register in `SCHEMES`; the container never changes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch

from pgolf.errors import PgolfError
from pgolf.model.gpt import CONTROL_PATTERNS

KEEP_FLOAT_MAX_NUMEL = 65_536
INT8_CLIP_QUANTILE = 99.99984 / 100.0

TORCH_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16,
                "int64": torch.int64, "int32": torch.int32, "int16": torch.int16, "int8": torch.int8,
                "uint8": torch.uint8, "bool": torch.bool, "float64": torch.float64}


@dataclass
class QuantizedTensor:
    """One tensor's stored form: a scheme name and named numpy arrays."""

    name: str
    shape: tuple[int, ...]
    dtype: str
    scheme: str
    arrays: dict[str, np.ndarray] = field(default_factory=dict)


@dataclass
class QuantizedModel:
    tensors: list[QuantizedTensor]


def _dtype_name(t: torch.Tensor) -> str:
    name = str(t.dtype).removeprefix("torch.")
    if name not in TORCH_DTYPES:
        raise PgolfError(f"cannot store tensor dtype {name}")
    return name


def _to_numpy(t: torch.Tensor) -> np.ndarray:
    if t.dtype == torch.bfloat16:
        return t.float().numpy()
    return t.contiguous().numpy()


def _int8_rows(w: torch.Tensor) -> dict[str, np.ndarray]:
    w32 = w.float()
    clip = torch.quantile(w32.abs(), INT8_CLIP_QUANTILE, dim=1)
    scale = (clip / 127.0).clamp_min(1.0 / 127.0).to(torch.float16)
    clipped = torch.maximum(torch.minimum(w32, clip[:, None]), -clip[:, None])
    q = torch.clamp(torch.round(clipped / scale.float()[:, None]), -127, 127).to(torch.int8)
    return {"q": q.numpy(), "scale": scale.numpy()}


def _int8_tensor(w: torch.Tensor) -> dict[str, np.ndarray]:
    w32 = w.float()
    clip = float(torch.quantile(w32.abs().flatten(), INT8_CLIP_QUANTILE)) if w32.numel() else 0.0
    scale = np.array(clip / 127.0 if clip > 0 else 1.0, dtype=np.float32)
    q = torch.clamp(torch.round(torch.clamp(w32, -clip, clip) / float(scale)), -127, 127).to(torch.int8)
    return {"q": q.numpy(), "scale": scale}


def _deq_rows(a: dict[str, np.ndarray], shape) -> torch.Tensor:
    q = torch.from_numpy(a["q"].astype(np.float32))
    return (q * torch.from_numpy(a["scale"].astype(np.float32))[:, None]).reshape(shape)


def _deq_tensor(a: dict[str, np.ndarray], shape) -> torch.Tensor:
    return (torch.from_numpy(a["q"].astype(np.float32)) * float(a["scale"])).reshape(shape)


def _deq_value(a: dict[str, np.ndarray], shape) -> torch.Tensor:
    return torch.from_numpy(np.array(a["value"])).reshape(shape)


# scheme name -> dequantizer(arrays, shape) -> tensor (the original dtype is restored by the caller)
DEQUANTIZERS: dict[str, Callable[[dict[str, np.ndarray], tuple], torch.Tensor]] = {
    "int8_row": _deq_rows, "int8_tensor": _deq_tensor, "fp16": _deq_value, "fp32": _deq_value, "raw": _deq_value,
}
SCHEME_BITS = {"int8_row": 8, "int8_tensor": 8, "fp16": 16, "fp32": 32, "raw": 0}


def quantize_int8(name: str, t: torch.Tensor) -> QuantizedTensor:
    """The baseline's per-tensor decision (see module docstring)."""
    t = t.detach().cpu()
    dtype = _dtype_name(t)
    shape = tuple(t.shape)
    if not t.is_floating_point():
        return QuantizedTensor(name, shape, dtype, "raw", {"value": _to_numpy(t)})
    if t.numel() <= KEEP_FLOAT_MAX_NUMEL:
        if any(p in name for p in CONTROL_PATTERNS):
            return QuantizedTensor(name, shape, dtype, "fp32", {"value": t.float().numpy()})
        return QuantizedTensor(name, shape, dtype, "fp16", {"value": t.to(torch.float16).numpy()})
    if t.ndim == 2:
        return QuantizedTensor(name, shape, dtype, "int8_row", _int8_rows(t))
    return QuantizedTensor(name, shape, dtype, "int8_tensor", _int8_tensor(t))


SCHEMES: dict[str, Callable[[str, torch.Tensor], QuantizedTensor]] = {"int8": quantize_int8}


def quantize_state_dict(state_dict: dict[str, torch.Tensor], scheme: str = "int8") -> QuantizedModel:
    if scheme not in SCHEMES:
        raise PgolfError(f"unknown quantization scheme {scheme!r} (known: {', '.join(SCHEMES)})")
    return QuantizedModel([SCHEMES[scheme](name, t) for name, t in state_dict.items()])


def dequantize_tensor(qt: QuantizedTensor) -> torch.Tensor:
    if qt.scheme not in DEQUANTIZERS:
        raise PgolfError(f"tensor {qt.name}: unknown storage scheme {qt.scheme!r}")
    if qt.dtype not in TORCH_DTYPES:
        raise PgolfError(f"tensor {qt.name}: unknown dtype {qt.dtype!r}")
    return DEQUANTIZERS[qt.scheme](qt.arrays, qt.shape).to(TORCH_DTYPES[qt.dtype])


def dequantize_state_dict(qm: QuantizedModel) -> dict[str, torch.Tensor]:
    return {qt.name: dequantize_tensor(qt) for qt in qm.tensors}
