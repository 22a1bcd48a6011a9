"""Post-training quantization: how each tensor of a state dict becomes a few named numpy arrays, and back.

Two registries keep this open for later work (int6, GPTQ, LQER, ternary) without touching the artifact container:

- `SCHEMES`: *storage schemes*, one per way a single tensor can be stored (`raw`, `fp16`, `fp32`, `int8_row`,
  `int8_tensor`, and the mixed recipe's `intN_row`, `intN_row_lqer` (LQER), `intN_row_awqM(_lqer)` (AWQ-lite's
  wide column groups at M bits)). Each has a `quantize(tensor) -> arrays`, a `dequantize(arrays, shape) -> tensor`,
  a `check` that validates arrays read from a file (keys, dtypes, shapes) and a bit width. The container stores the
  scheme name per tensor and its arrays as opaque typed blobs, so a new scheme is one new registry entry.
- `POLICIES`: *model-level recipes* that choose a storage scheme for every tensor of a state dict by name, shape and
  size. `quantize_state_dict(sd, scheme="int8")` runs the policy named `scheme` (the config's `quant.scheme`, the
  export recipe; `int8` is here, `mixed` is `pgolf.quant.recipe.quantize_mixed`), not to be confused with a tensor's
  storage scheme (`QuantizedTensor.scheme`, a key of `SCHEMES`).

The `int8` policy is the official baseline's export (`quantize_state_dict_int8`, docs/rules.md#baseline-int8-export):

- non-float tensors are stored as they are (`raw`);
- float tensors of at most 65,536 elements stay float: `fp32` for a control tensor (`pgolf.model.roles.is_control`:
  the baseline's `attn_scale`, `mlp_scale`, `resid_mix`, `q_gain`, `skip_weights` and the record options' control
  tensors and gates), else `fp16`;
- larger 2-D float tensors: `int8_row`, symmetric int8 with one fp16 scale per row;
- larger float tensors of any other rank: `int8_tensor`, symmetric int8 with one fp32 scale.

The clip is the 99.99984th percentile of |w| (per row, or over the whole tensor) with *linear interpolation*
between order statistics: rank = q * (n - 1) with q = 0.9999984 in float32, the value lerped between the sorted
elements at floor(rank) and ceil(rank). That is `torch.quantile`'s default (and numpy's default `percentile`
method, Hyndman-Fan type 7); `clip_quantile` reproduces it bit for bit without torch.quantile's 2^24-element input
limit. Consequence worth knowing: for rows shorter than ~625,000 elements, rank > n - 2, so the clip lies between
the second-largest and the largest |w| and clipping barely touches anything; the percentile only bites on very
long rows or large non-matrix tensors.

Per row, scale = clip / 127 floored at 1/127 (so rows with max |w| < 1/254 quantize to all zeros), stored fp16.
Deliberate deviation from the baseline: the baseline divides by the fp32 scale and only then rounds the scale to
fp16, so its stored (q, scale) pair can be off by one step from the nearest grid point for ~1e-4 of the weights.
Here q = round(clamp(w, -clip, clip) / scale16) with the fp16-rounded scale that is stored, clamped to [-127, 127],
so dequantization q * scale16 is exactly the grid point the quantizer chose and |w - q * scale16| <= scale16 / 2
for every w inside the clip. Per tensor (non-2-D), as in the baseline: scale = clip / 127 computed in double and
stored fp32 (1.0 when clip is 0; no 1/127 floor), q computed against that stored fp32 scale.
Rounding is torch.round (half to even). Dequantization computes q * scale in float32 and casts to the original
dtype; small floats are cast back from fp16/fp32 the same way.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

import numpy as np
import torch

from pgolf.errors import PgolfError
from pgolf.model.roles import is_control

KEEP_FLOAT_MAX_NUMEL = 65_536
INT8_CLIP_PERCENTILE = 99.99984
INT8_CLIP_Q = INT8_CLIP_PERCENTILE / 100.0
INT8_MAX = 127

# Whitelisted original tensor dtypes (name in the header -> torch dtype). Names are looked up, never evaluated.
TENSOR_DTYPES: dict[str, torch.dtype] = {
    "float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16, "float64": torch.float64,
    "int64": torch.int64, "int32": torch.int32, "int16": torch.int16, "int8": torch.int8, "uint8": torch.uint8,
    "bool": torch.bool,
}
# Whitelisted stored array dtypes (name in the header -> little-endian numpy dtype).
ARRAY_DTYPES: dict[str, np.dtype] = {
    name: np.dtype(code).newbyteorder("<") if np.dtype(code).itemsize > 1 else np.dtype(code)
    for name, code in [("bool", "?"), ("int8", "i1"), ("uint8", "u1"), ("int16", "i2"), ("uint16", "u2"),
                       ("int32", "i4"), ("uint32", "u4"), ("int64", "i8"), ("float16", "f2"), ("float32", "f4"),
                       ("float64", "f8")]
}


@dataclass
class QuantizedTensor:
    """One tensor's stored form: name, original shape and dtype name, storage scheme, and named numpy arrays."""

    name: str
    shape: tuple[int, ...]
    dtype: str
    scheme: str
    arrays: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def stored_bytes(self) -> int:
        """Uncompressed bytes of this tensor's arrays."""
        return sum(int(a.nbytes) for a in self.arrays.values())

    @property
    def bits(self) -> int:
        """Bits per stored element: the scheme's width, or the dtype's width for `raw`."""
        return tensor_bits(self)

    @property
    def is_row_scaled(self) -> bool:
        """Whether the storage scheme holds per-row integers (`ROW_SCALED_SCHEMES`): arrays `q` [rows, cols] int8 and
        `scale` [rows] fp16, what the budget fitter sizes and prunes."""
        return self.scheme in ROW_SCALED_SCHEMES


@dataclass
class QuantizedModel:
    """A quantized state dict: one `QuantizedTensor` per entry, in the state dict's order."""

    tensors: list[QuantizedTensor]

    def __iter__(self) -> Iterator[QuantizedTensor]:
        return iter(self.tensors)

    def __len__(self) -> int:
        return len(self.tensors)

    def names(self) -> list[str]:
        return [qt.name for qt in self.tensors]

    def __getitem__(self, name: str) -> QuantizedTensor:
        for qt in self.tensors:
            if qt.name == name:
                return qt
        raise KeyError(name)

    @property
    def stored_bytes(self) -> int:
        return sum(qt.stored_bytes for qt in self.tensors)


# ---------------------------------------------------------------------------------------------------------- quantile

def clip_quantile(a: torch.Tensor, q: float) -> torch.Tensor:
    """The q-quantile of `a` along its last dimension, linear interpolation, bit-identical to
    `torch.quantile(a, q, dim=-1)` for finite float32 input but without its 2^24-element limit."""
    a = a.float()
    n = a.shape[-1]
    if n == 0:
        return torch.zeros(a.shape[:-1], dtype=torch.float32)
    s = torch.sort(a, dim=-1).values
    rank = torch.tensor(q, dtype=torch.float32) * (n - 1)  # float32 arithmetic, as torch.quantile does
    lo, hi = int(rank), int(torch.ceil(rank))
    weight = rank - lo
    return torch.lerp(s[..., lo], s[..., hi], weight.expand(s.shape[:-1]))


# ------------------------------------------------------------------------------------------------- storage schemes

@dataclass(frozen=True)
class Scheme:
    """A storage scheme for one tensor.

    quantize(tensor, **params) -> arrays; dequantize(arrays, shape) -> float tensor (cast to the original dtype by
    the caller); check(arrays, shape, dtype) -> an error message or None (validates untrusted arrays from a file);
    bits: bits per element (None: the stored dtype's width).
    """

    quantize: Callable[..., dict[str, np.ndarray]]
    dequantize: Callable[[dict[str, np.ndarray], tuple[int, ...]], torch.Tensor]
    check: Callable[[dict[str, np.ndarray], tuple[int, ...], str], str | None]
    bits: int | None


def _expect(arrays: dict[str, np.ndarray], spec: dict[str, tuple[str, tuple[int, ...]]]) -> str | None:
    """An error message unless `arrays` has exactly the keys of `spec` with those dtypes and shapes."""
    if set(arrays) != set(spec):
        return f"arrays {sorted(arrays)}, expected {sorted(spec)}"
    for key, (dtype, shape) in spec.items():
        arr = arrays[key]
        if arr.dtype.name != dtype or tuple(arr.shape) != tuple(shape):
            return f"array {key} is {arr.dtype.name}{list(arr.shape)}, expected {dtype}{list(shape)}"
    return None


def _tensor(arr: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.array(arr, dtype=arr.dtype.newbyteorder("="), copy=True))


def _require_finite(t: torch.Tensor) -> torch.Tensor:
    t = t.float()
    if not bool(torch.isfinite(t).all()):
        raise PgolfError("has non-finite values (NaN or inf); cannot quantize it")
    return t


def _numpy_dtype_name(t: torch.Tensor) -> str:
    name = str(t.dtype).removeprefix("torch.")
    if name not in ARRAY_DTYPES:
        raise PgolfError(f"dtype {name} cannot be stored raw")
    return name


def _raw_quantize(t: torch.Tensor) -> dict[str, np.ndarray]:
    _numpy_dtype_name(t)
    return {"value": t.contiguous().numpy().copy()}


def _raw_check(arrays, shape, dtype) -> str | None:
    if dtype not in ARRAY_DTYPES:
        return f"dtype {dtype} cannot be stored raw"
    return _expect(arrays, {"value": (dtype, shape)})


def _value_deq(arrays, shape) -> torch.Tensor:
    return _tensor(arrays["value"]).reshape(shape)


def _float_scheme(torch_dtype: torch.dtype, name: str) -> Scheme:
    def quantize(t: torch.Tensor) -> dict[str, np.ndarray]:
        return {"value": t.detach().to(torch_dtype).contiguous().numpy().copy()}

    def check(arrays, shape, dtype) -> str | None:
        return _expect(arrays, {"value": (name, shape)})

    return Scheme(quantize, _value_deq, check, torch.finfo(torch_dtype).bits)


def _int8_row_quantize(t: torch.Tensor, clip_q: float = INT8_CLIP_Q) -> dict[str, np.ndarray]:
    if t.ndim != 2:
        raise PgolfError(f"int8_row needs a 2-D tensor, got shape {list(t.shape)}")
    w = _require_finite(t)
    clip = clip_quantile(w.abs(), clip_q)
    scale = (clip / INT8_MAX).clamp_min(1.0 / INT8_MAX).to(torch.float16)
    clipped = torch.maximum(torch.minimum(w, clip[:, None]), -clip[:, None])
    q = torch.clamp(torch.round(clipped / scale.float()[:, None]), -INT8_MAX, INT8_MAX).to(torch.int8)
    return {"q": q.numpy(), "scale": scale.numpy()}


def _int8_row_deq(arrays, shape) -> torch.Tensor:
    return _tensor(arrays["q"]).float() * _tensor(arrays["scale"]).float()[:, None]


def _int8_row_check(arrays, shape, dtype) -> str | None:
    if len(shape) != 2:
        return f"int8_row needs a 2-D shape, got {list(shape)}"
    return _expect(arrays, {"q": ("int8", shape), "scale": ("float16", (shape[0],))})


def _int8_tensor_quantize(t: torch.Tensor, clip_q: float = INT8_CLIP_Q) -> dict[str, np.ndarray]:
    w = _require_finite(t)
    clip = float(clip_quantile(w.abs().reshape(1, -1), clip_q)[0]) if w.numel() else 0.0
    scale = torch.tensor(clip / INT8_MAX if clip > 0 else 1.0, dtype=torch.float32)
    q = torch.clamp(torch.round(torch.clamp(w, -clip, clip) / scale), -INT8_MAX, INT8_MAX).to(torch.int8)
    return {"q": q.contiguous().numpy(), "scale": scale.numpy()}


def _int8_tensor_deq(arrays, shape) -> torch.Tensor:
    return _tensor(arrays["q"]).float() * _tensor(arrays["scale"]).float()


def _int8_tensor_check(arrays, shape, dtype) -> str | None:
    return _expect(arrays, {"q": ("int8", shape), "scale": ("float32", ())})


# ------------------------------------------------------------------------- general per-row intN (+ LQER residual)

LQER_GROUP = 64  # default entries of LQER's B factor per fp16 scale (PR #1797); `quant.lqer_group` changes it
LQER_A_RANGE = (-2, 1)  # INT2, asymmetric
LQER_B_RANGE = (-8, 7)  # INT4, asymmetric
AWQ_BITS = range(3, 9)  # widths of AWQ-lite's salient column groups (always wider than the matrix's own width)


def qmax(bits: int) -> int:
    """Largest level of symmetric `bits`-bit storage: 1 (ternary, bits=2), 31 (int6), 127 (int8)."""
    return (1 << (bits - 1)) - 1


def lqer_group_of(arrays: dict[str, np.ndarray]) -> int:
    """Entries per `lqer_b_scale` of an `..._lqer` record: the stored `lqer_group` (int32 scalar), or 64 where it is
    absent (every artifact written before `quant.lqer_group` existed, and every one written at the default, which
    therefore stays byte-identical). Stored rather than derived: ceil(rank * cols / group) scales fit several
    groups (64 through 73 all give 8 scales for 512 entries) that decode differently."""
    return int(arrays["lqer_group"]) if "lqer_group" in arrays else LQER_GROUP


def lqer_residual(arrays: dict[str, np.ndarray]) -> torch.Tensor:
    """The dequantized low-rank correction A @ B of an `..._lqer` record (LQER, PR #1797;
    docs/techniques.md#quantization-and-export)."""
    a = _tensor(arrays["lqer_a"]).float() * _tensor(arrays["lqer_a_scale"]).float()
    b_q = _tensor(arrays["lqer_b"]).float()
    b_scale = _tensor(arrays["lqer_b_scale"]).float().repeat_interleave(lqer_group_of(arrays))[:b_q.numel()]
    return a @ (b_q.reshape(-1) * b_scale).reshape(b_q.shape)


def awq_columns(arrays: dict[str, np.ndarray], cols: int) -> torch.Tensor:
    """Boolean mask [cols] of the columns an `..._awqN` record stores at the wider width (`q_awq`): the groups that
    start at `awq_start`, each `q_awq` columns / groups wide (AWQ-lite, PR #1908; `pgolf.quant.awq`)."""
    starts = arrays["awq_start"].astype(np.int64)
    width = arrays["q_awq"].shape[1] // max(1, starts.size)
    mask = torch.zeros(cols, dtype=torch.bool)
    for start in starts.tolist():
        mask[start:start + width] = True
    return mask


def awq_scale(scale: torch.Tensor, bits: int, awq_bits: int) -> torch.Tensor:
    """The per-row step of AWQ-lite's wide columns, derived from the row's stored step (float32, so encoder and
    decoder agree bit for bit): the same clip spread over qmax(awq_bits) levels instead of qmax(bits), which is
    PR #1908's s_hi = clip / qmax(awq_bits) up to where fp16 rounding happens, and costs no array."""
    return scale.float() * float(qmax(bits)) / float(qmax(awq_bits))


def row_integers(arrays: dict[str, np.ndarray], shape: tuple[int, ...], bits: int = 8, awq_bits: int = 8
                 ) -> torch.Tensor:
    """The per-row integer part of a row-scaled record, q * scale, without any LQER correction; an `..._awqN`
    record (`bits`, `awq_bits`) puts its `q_awq` columns back on their finer grid (`awq_scale`)."""
    scale = _tensor(arrays["scale"]).float()
    w = _tensor(arrays["q"]).float() * scale[:, None]
    if "q_awq" not in arrays:
        return w
    mask = awq_columns(arrays, shape[1])
    out = torch.empty(shape[0], shape[1], dtype=torch.float32)
    out[:, ~mask] = w
    out[:, mask] = _tensor(arrays["q_awq"]).float() * awq_scale(scale, bits, awq_bits)[:, None]
    return out


def _awq_problem(arrays: dict[str, np.ndarray], shape: tuple[int, ...]) -> str | None:
    """Why the AWQ arrays of a record are malformed (group starts out of order, overlapping, past the last column,
    or not dividing `q_awq`'s columns), else None."""
    starts, wide = arrays["awq_start"].astype(np.int64), arrays["q_awq"].shape[1]
    if not starts.size or not wide or wide % starts.size:
        return f"q_awq has {wide} columns for {starts.size} groups"
    if starts[0] < 0 or (np.diff(np.append(starts, shape[1])) < wide // starts.size).any():
        return f"awq_start {starts.tolist()} are not increasing, disjoint groups of {wide // starts.size} columns"
    return None


def _make_int_row_scheme(bits: int, lqer: bool, awq_bits: int | None = None) -> Scheme:
    """Symmetric per-row integers in [-qmax, qmax] stored one per int8 byte (the entropy coder removes the slack,
    docs/techniques.md#quantization-and-export) with one fp16 scale per row; `lqer` adds the low-rank residual
    arrays (and, when its group is not 64, `lqer_group`); `awq_bits` (AWQ-lite, PR #1908) moves whole column
    groups to `q_awq` [rows, groups * width] at that wider width, on the row's step scaled by qmax(bits) /
    qmax(awq_bits) (`awq_scale`), with the groups' first columns in `awq_start` (int32, increasing), leaving `q`
    [rows, the other columns] so that each width is its own integer stream for the codec. The values are produced by `pgolf.quant.recipe` (round-to-nearest
    or GPTQ); this scheme only stores and restores them."""
    name = f"int{bits}_row" + (f"_awq{awq_bits}" if awq_bits else "") + ("_lqer" if lqer else "")
    top = qmax(bits)

    def quantize(t: torch.Tensor) -> dict[str, np.ndarray]:
        raise PgolfError(f"{name} records are built by pgolf.quant.recipe, not by quantize_tensor")

    def dequantize(arrays, shape) -> torch.Tensor:
        w = row_integers(arrays, shape, bits, awq_bits or bits)
        return w + lqer_residual(arrays) if lqer else w

    def check(arrays, shape, dtype) -> str | None:
        if len(shape) != 2:
            return f"{name} needs a 2-D shape, got {list(shape)}"
        spec = {"q": ("int8", shape), "scale": ("float16", (shape[0],))}
        if awq_bits:
            n = arrays["awq_start"].size if "awq_start" in arrays and arrays["awq_start"].ndim == 1 else -1
            wide = arrays["q_awq"].shape[1] if "q_awq" in arrays and arrays["q_awq"].ndim == 2 else -1
            spec |= {"q": ("int8", (shape[0], shape[1] - wide)), "q_awq": ("int8", (shape[0], wide)),
                     "awq_start": ("int32", (n,))}
        if lqer:
            rank = arrays["lqer_a"].shape[1] if "lqer_a" in arrays and arrays["lqer_a"].ndim == 2 else -1
            group = arrays.get("lqer_group")
            if group is not None:
                if group.dtype.name != "int32" or group.shape != () or int(group) < 1:
                    return "array lqer_group must be a positive int32 scalar"
                spec["lqer_group"] = ("int32", ())
            n_groups = -(-rank * shape[1] // lqer_group_of(arrays))
            spec |= {"lqer_a": ("int8", (shape[0], rank)), "lqer_a_scale": ("float16", ()),
                     "lqer_b": ("int8", (rank, shape[1])), "lqer_b_scale": ("float16", (n_groups,))}
        problem = _expect(arrays, spec) or (_awq_problem(arrays, shape) if awq_bits else None)
        if problem:
            return problem
        checks = [("q", -top, top)] + ([("q_awq", -qmax(awq_bits), qmax(awq_bits))] if awq_bits else [])
        checks += [("lqer_a", *LQER_A_RANGE), ("lqer_b", *LQER_B_RANGE)] if lqer else []
        for key, lo, hi in checks:
            arr = arrays[key]
            if arr.size and (int(arr.min()) < lo or int(arr.max()) > hi):
                return f"array {key} has values outside [{lo}, {hi}]"
        return None

    return Scheme(quantize, dequantize, check, bits)


def awq_scheme(bits: int, awq_bits: int) -> str:
    """The storage scheme of a `bits`-bit row matrix whose salient column groups are at `awq_bits` (> bits)."""
    return f"int{bits}_row_awq{awq_bits}"


_AWQ_PAIRS = [(b, a) for b in range(2, 8) for a in AWQ_BITS if a > b]
SCHEMES: dict[str, Scheme] = {
    "raw": Scheme(_raw_quantize, _value_deq, _raw_check, None),
    "fp16": _float_scheme(torch.float16, "float16"),
    "fp32": _float_scheme(torch.float32, "float32"),
    **{f"int{b}_row" + suffix: _make_int_row_scheme(b, bool(suffix)) for b in range(2, 8) for suffix in ("", "_lqer")},
    "int8_row": Scheme(_int8_row_quantize, _int8_row_deq, _int8_row_check, 8),
    "int8_row_lqer": _make_int_row_scheme(8, True),
    "int8_tensor": Scheme(_int8_tensor_quantize, _int8_tensor_deq, _int8_tensor_check, 8),
    **{awq_scheme(b, a) + suffix: _make_int_row_scheme(b, bool(suffix), a)
       for b, a in _AWQ_PAIRS for suffix in ("", "_lqer")},
}
# The per-row integer schemes (`intN_row`, `intN_row_lqer`, N = 2..8, and `intN_row_awqM(_lqer)`): `q` [rows, cols]
# int8 (fewer columns with AWQ) with one fp16 `scale` per row (`QuantizedTensor.is_row_scaled`): the one place that
# knows which scheme names these are.
ROW_SCALED_SCHEMES = frozenset([f"int{b}_row{lqer}" for b in range(2, 9) for lqer in ("", "_lqer")] +
                               [awq_scheme(b, a) + lqer for b, a in _AWQ_PAIRS for lqer in ("", "_lqer")])


def tensor_bits(qt: QuantizedTensor) -> int:
    """Bits per element of a stored tensor (8, 16, 32; a raw tensor's dtype width)."""
    scheme = SCHEMES[qt.scheme]
    if scheme.bits is not None:
        return scheme.bits
    return 8 * ARRAY_DTYPES[qt.dtype].itemsize


def _dtype_name(t: torch.Tensor) -> str:
    name = str(t.dtype).removeprefix("torch.")
    if name not in TENSOR_DTYPES:
        raise PgolfError(f"dtype {name} is not supported (supported: {', '.join(TENSOR_DTYPES)})")
    return name


def quantize_tensor(name: str, t: torch.Tensor, scheme: str, **params: Any) -> QuantizedTensor:
    """Store tensor `t` with storage scheme `scheme` (a key of `SCHEMES`); PgolfError naming the tensor otherwise."""
    if scheme not in SCHEMES:
        raise PgolfError(f"tensor {name}: unknown storage scheme {scheme!r} (known: {', '.join(SCHEMES)})")
    t = t.detach().cpu().contiguous()
    try:
        dtype = _dtype_name(t)
        arrays = {k: np.require(v, requirements="C") for k, v in SCHEMES[scheme].quantize(t, **params).items()}
    except PgolfError as exc:
        raise PgolfError(f"tensor {name}: {exc}") from None
    return QuantizedTensor(name, tuple(int(d) for d in t.shape), dtype, scheme, arrays)


def check_tensor(qt: QuantizedTensor) -> str | None:
    """An error message if `qt` is not a well-formed record (unknown scheme or dtype, wrong arrays), else None."""
    if qt.scheme not in SCHEMES:
        return f"unknown storage scheme {qt.scheme!r}"
    if qt.dtype not in TENSOR_DTYPES:
        return f"unknown dtype {qt.dtype!r}"
    if any(not isinstance(a, np.ndarray) or a.dtype.name not in ARRAY_DTYPES for a in qt.arrays.values()):
        return "arrays must be numpy arrays of whitelisted dtypes"
    return SCHEMES[qt.scheme].check(qt.arrays, tuple(qt.shape), qt.dtype)


# ---------------------------------------------------------------------------------------------------------- policies

def int8_policy(name: str, t: torch.Tensor, *, keep_float_max_numel: int = KEEP_FLOAT_MAX_NUMEL) -> QuantizedTensor:
    """The baseline's per-tensor choice (docs/rules.md#baseline-int8-export; see the module docstring)."""
    if not t.is_floating_point():
        return quantize_tensor(name, t, "raw")
    if t.numel() <= keep_float_max_numel:
        return quantize_tensor(name, t, "fp32" if is_control(name) else "fp16")
    return quantize_tensor(name, t, "int8_row" if t.ndim == 2 else "int8_tensor")


# name -> policy(name, tensor, **options) -> QuantizedTensor
POLICIES: dict[str, Callable[..., QuantizedTensor]] = {"int8": int8_policy}


def quantize_state_dict(state_dict: dict[str, torch.Tensor], scheme: str = "int8",
                        **options: Any) -> QuantizedModel:
    """Quantize every tensor of `state_dict` with the policy named `scheme` (a key of `POLICIES`: the export recipe
    `quant.scheme`, which picks a storage scheme per tensor).

    `options` go to the policy (for `int8`: `keep_float_max_numel`).
    """
    policy = POLICIES.get(scheme) if isinstance(scheme, str) else None
    if policy is None:
        raise PgolfError(f"unknown quantization scheme {scheme!r} (known: {', '.join(POLICIES)})")
    tensors = []
    for name, t in state_dict.items():
        if not isinstance(t, torch.Tensor):
            raise PgolfError(f"tensor {name}: is a {type(t).__name__}, not a tensor")
        tensors.append(policy(name, t, **options))
    return QuantizedModel(tensors)


def dequantize_tensor(qt: QuantizedTensor) -> torch.Tensor:
    """The tensor a record stands for, in its original dtype and shape."""
    problem = check_tensor(qt)
    if problem:
        raise PgolfError(f"tensor {qt.name}: {problem}")
    out = SCHEMES[qt.scheme].dequantize(qt.arrays, tuple(qt.shape))
    return out.reshape(qt.shape).to(TENSOR_DTYPES[qt.dtype])


def dequantize_state_dict(qm: QuantizedModel) -> dict[str, torch.Tensor]:
    """Dequantize every record, in order, restoring original dtypes and shapes."""
    return {qt.name: dequantize_tensor(qt) for qt in qm.tensors}
