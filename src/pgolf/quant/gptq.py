"""Full-Hessian GPTQ (Frantar et al., arXiv:2210.17323; records PRs #535/#1019/#1060,
docs/techniques.md#full-hessian-gptq).

Round-to-nearest treats each weight alone. GPTQ quantizes a matrix W [rows, cols] one input column at a time and
pushes each column's rounding error onto the columns not yet quantized, weighted by the inverse Hessian of the layer's
reconstruction loss ||(W - Q) X^T||^2, H = X^T X over calibration inputs X. Details as the records use them:

- dead inputs (diag H = 0) get diag 1 and their weights are zeroed; damping 0.01 * mean(diag H) on the diagonal;
- act-order: columns in order of descending diag H (the most-used inputs are quantized first, when there is still
  freedom left to compensate them);
- the upper Cholesky factor of H^-1 drives the updates, in blocks of 128 columns (lazy batch updates);
- the per-row scale is fixed up front (from `pgolf.quant.grid`), so GPTQ only changes which grid points are chosen;
- AWQ-lite (PR #1908, `pgolf.quant.awq`): a few salient columns may use a second, finer per-row grid (`fine`) in the
  same solve; their rounding error feeds back onto the other columns like any column's.

Hessians come from `HessianCollector`: forward pre-hooks on every `CastedLinear` accumulate X^T X of its input in
float32 (a looped layer accumulates over all its applications); the Q, K and V projections of one attention read the
same normalised input, so they share one matrix, accumulated once per application (the hooks check that they really
read the same tensor; the 1.0611 record's `collect_hessians` also takes one float32 X^T X of the attention input for
all three); the tied embedding, used as the output projection, gets the final hidden states. The collector also
counts the rows each matrix saw, so that diag(H) / rows is every input channel's mean square: the activation RMS
AWQ-lite scores column groups with (PR #1908 sums x^2 per channel in a second hook; diag(H) already is that sum).
Float32 is enough: H only steers GPTQ's error feedback after 1% damping, and `gptq_quantize` solves in float64 (on
CUDA the trainer's TF32 matmuls are exact for bf16 activations and round float32 ones by about 2^-11, which averages
out over the tokens). Calibration tokens come either from training batches inside the training budget, or from
sequences the model samples itself after training (`generate_calibration`, the 2026-03-25 record's AR
self-generated calibration: no train or val data is touched after the clock).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from pgolf.errors import PgolfError
from pgolf.model.roles import shared_input
# `quant.calib`, `quant.calib_reserve`, defined torch-free there (re-exported)
from pgolf.quant.choices import CALIB_RESERVES, CALIBRATION_SOURCES  # noqa: F401
from pgolf.quant.grid import round_to_grid
from pgolf.quant.schemes import qmax


class HessianCollector:
    """Accumulates H = sum X^T X for every linear layer of a GPT (and the tied embedding) over calibration batches.

    Use as a context manager around `collect(tokens)` calls; `hessians` maps state-dict weight names to `dtype`
    [in, in] matrices (Q, K and V of one attention map to one shared tensor unless `share_inputs=False`),
    `tokens_seen` counts rows. float64 without sharing is the reference the tests compare against.
    """

    def __init__(self, model: nn.Module, *, dtype: torch.dtype = torch.float32, share_inputs: bool = True) -> None:
        from pgolf.model.layers import CastedLinear

        self.model = model
        self.dtype = dtype
        self.tokens_seen = 0
        self._sums: dict[str, torch.Tensor] = {}
        self._rows: dict[str, int] = {}  # key -> input rows accumulated (tokens x applications)
        self._handles = []
        self._linears = {f"{name}.weight": m for name, m in model.named_modules() if isinstance(m, CastedLinear)}
        # Linears that read one input tensor (an attention's Q, K and V) share the Hessian keyed by the first.
        self._key = {name: shared_input(name) if share_inputs else name for name in self._linears}
        self._readers: dict[str, set[str]] = {}
        for name, key in self._key.items():
            self._readers.setdefault(key, set()).add(name)
        self._pending: dict[str, tuple[torch.Tensor, set[str]]] = {}  # key -> (input, readers yet to read it)

    @property
    def hessians(self) -> dict[str, torch.Tensor]:
        """Weight name -> its Hessian (shared tensors appear under every name that reads them)."""
        return self._named(self._sums)

    def distinct(self) -> list[torch.Tensor]:
        """Every accumulated matrix once (to all-reduce across ranks without summing a shared one twice)."""
        return list(self._sums.values())

    def hessians_on(self, device: torch.device | str) -> dict[str, torch.Tensor]:
        """`hessians` moved to `device`, each shared matrix once (so it stays shared)."""
        return self._named({key: h.to(device) for key, h in self._sums.items()})

    def activation_rms(self, device: torch.device | str = "cpu", world_size: int = 1) -> dict[str, torch.Tensor]:
        """Weight name -> the RMS of each of its input channels over everything collected (float32 [in]):
        sqrt(diag(H) / rows). Call after the Hessians are all-reduced, with the number of ranks that summed into
        them (every rank collects batches of one shape)."""
        return self._named({key: (torch.diagonal(h).float().clamp_min(0) / max(1, self._rows[key] * world_size))
                            .sqrt().to(device) for key, h in self._sums.items()})

    def _named(self, sums: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        keys = self._key | {"tok_emb.weight": "tok_emb.weight"}
        return {name: sums[key] for name, key in keys.items() if key in sums}

    def _accumulate(self, key: str, x: torch.Tensor) -> None:
        x = x.detach().reshape(-1, x.shape[-1]).to(self.dtype)
        if key not in self._sums:
            self._sums[key] = torch.zeros(x.shape[1], x.shape[1], dtype=self.dtype, device=x.device)
        self._sums[key].addmm_(x.T, x)
        self._rows[key] = self._rows.get(key, 0) + x.shape[0]

    def _read(self, name: str, x: torch.Tensor) -> None:
        """One application of linear `name` to `x`: accumulate, unless a reader of the same key already did."""
        key = self._key[name]
        pending = self._pending.get(key)
        if pending is not None and pending[0] is x and name in pending[1]:
            pending[1].discard(name)
            if not pending[1]:
                del self._pending[key]  # every reader has read it: drop the reference to the activation
            return
        self._check_done(key)
        self._accumulate(key, x)
        if len(self._readers[key]) > 1:
            self._pending[key] = (x, self._readers[key] - {name})

    def _check_done(self, *keys: str) -> None:
        for key in keys or tuple(self._pending):
            if key in self._pending:
                missing = ", ".join(sorted(self._pending.pop(key)[1]))
                raise PgolfError(f"internal: {missing} did not read the input of {key}, whose Hessian it shares; "
                                 "collect with share_inputs=False")

    def __enter__(self) -> "HessianCollector":
        for name, module in self._linears.items():
            self._handles.append(module.register_forward_pre_hook(
                lambda mod, args, name=name: self._read(name, args[0])))
        return self

    def __exit__(self, *exc) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        self._pending.clear()

    @torch.no_grad()
    def collect(self, tokens: torch.Tensor, segments=None) -> None:
        """Run one batch of token ids [B, T] through the model (attention cut at `segments` when given, as in
        training), accumulating every layer's Hessian."""
        if not self._handles:
            raise PgolfError("internal: HessianCollector.collect outside its `with` block")
        hidden = self.model.hidden(tokens, segments=segments)
        self._check_done()
        if getattr(self.model, "lm_head", None) is None:
            self._accumulate("tok_emb.weight", hidden)  # the tied embedding is the output projection
        else:
            self.model.lm_head(hidden)
        self.tokens_seen += tokens.numel()


@dataclass(frozen=True)
class FineColumns:
    """Columns that GPTQ rounds on a second per-row grid: `mask` [cols] bool, `scale` [rows] (fp16-representable
    float32), `bits` their width (AWQ-lite's salient groups, `pgolf.quant.awq`)."""

    mask: torch.Tensor
    scale: torch.Tensor
    bits: int


def gptq_quantize(w: torch.Tensor, hessian: torch.Tensor, scale: torch.Tensor, bits: int, *, block: int = 128,
                  damp: float = 0.01, act_order: bool = True, fine: FineColumns | None = None) -> torch.Tensor:
    """GPTQ integers (int8 [rows, cols]) of `w` on the fixed per-row grid `scale` (see the module docstring); the
    columns of `fine.mask` are rounded on `fine.scale` at `fine.bits` instead, inside the same solve."""
    rows, cols = w.shape
    if hessian.shape != (cols, cols):
        raise PgolfError(f"Hessian shape {list(hessian.shape)} does not match a matrix with {cols} columns")
    top = qmax(bits)
    w = w.detach().double().clone()
    h = hessian.detach().double().clone()
    dead = torch.diagonal(h) == 0
    h[dead, dead] = 1.0
    w[:, dead] = 0.0
    h.diagonal().add_(damp * torch.diagonal(h).mean())
    perm = torch.argsort(torch.diagonal(h), descending=True) if act_order else torch.arange(cols)
    w, h = w[:, perm], h[perm][:, perm]
    try:
        hinv = torch.linalg.cholesky(torch.cholesky_inverse(torch.linalg.cholesky(h)), upper=True)
    except RuntimeError:
        raise PgolfError("GPTQ: the damped Hessian is not positive definite; collect more calibration tokens or "
                         "raise the damping") from None
    s = scale.double()[:, None]
    fine_at = fine.mask[perm].tolist() if fine is not None else [False] * cols
    s_fine = fine.scale.double()[:, None] if fine is not None else s
    top_fine = qmax(fine.bits) if fine is not None else top
    q = torch.zeros_like(w)
    for i1 in range(0, cols, block):
        i2 = min(i1 + block, cols)
        w1 = w[:, i1:i2].clone()
        err1 = torch.zeros_like(w1)
        h1 = hinv[i1:i2, i1:i2]
        for i in range(i2 - i1):
            col = w1[:, i:i + 1]
            si, ti = (s_fine, top_fine) if fine_at[i1 + i] else (s, top)
            qc = torch.clamp(torch.round(col / si), -ti, ti)
            q[:, i1 + i:i1 + i + 1] = qc
            e = (col - qc * si) / h1[i, i]
            w1[:, i:] -= e @ h1[i:i + 1, i:]
            err1[:, i:i + 1] = e
        w[:, i2:] -= err1 @ hinv[i1:i2, i2:]
    out = torch.empty_like(q)
    out[:, perm] = q
    return out.to(torch.int8)


def hessian_error(w: torch.Tensor, w_hat: torch.Tensor, hessian: torch.Tensor | None) -> float:
    """The layer reconstruction error tr(E H E^T) / tr(H) (plain squared error when there is no Hessian)."""
    e = (w.double() - w_hat.double())
    if hessian is None:
        return float((e * e).sum())
    return float(((e @ hessian.double()) * e).sum() / torch.diagonal(hessian).sum().clamp_min(1e-30))


@torch.no_grad()
def generate_calibration(model: nn.Module, *, num_seqs: int, seq_len: int, temperature: float = 0.8,
                         seed: int = 0, batch: int = 8, device: torch.device | None = None) -> torch.Tensor:
    """Token sequences [num_seqs, seq_len] sampled by the model itself from a random first token.

    Full recomputation per step (no KV cache): simple and exact for every architecture option, and the cost
    (num_seqs * seq_len^2 / 2 token-forwards) is paid once, after the training clock.
    """
    device = device or next(model.parameters()).device
    vocab = model.cfg.vocab_size
    gen = torch.Generator(device="cpu").manual_seed(seed)
    out = []
    was_training = model.training
    model.eval()
    try:
        for start in range(0, num_seqs, batch):
            n = min(batch, num_seqs - start)
            seqs = torch.randint(0, vocab, (n, 1), generator=gen).to(device)
            for _ in range(seq_len - 1):
                logits = model.head(model.hidden(seqs)[:, -1]).float() / max(temperature, 1e-6)
                probs = torch.softmax(logits, dim=-1).cpu()
                nxt = torch.multinomial(probs, 1, generator=gen).to(device)
                seqs = torch.cat([seqs, nxt], dim=1)
            out.append(seqs.cpu())
    finally:
        model.train(was_training)
    return torch.cat(out, dim=0)


def rtn_or_gptq(w: torch.Tensor, scale: torch.Tensor, bits: int, hessian: torch.Tensor | None,
                fine: FineColumns | None = None) -> torch.Tensor:
    """GPTQ integers when a Hessian is given, round-to-nearest otherwise (`fine` columns on their own grid)."""
    if hessian is None:
        q = round_to_grid(w.float(), scale.float(), bits)
        if fine is not None:
            q[:, fine.mask] = round_to_grid(w.float()[:, fine.mask], fine.scale.float(), fine.bits)
        return q.to(torch.int8)
    return gptq_quantize(w, hessian, scale.float(), bits, fine=fine)
