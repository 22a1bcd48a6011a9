"""Muon: momentum SGD whose update is orthogonalised by a Newton-Schulz iteration (Keller Jordan, 2024,
"Muon: An optimizer for hidden layers"; as used by the official baseline, docs/techniques.md#baseline-optimizer).

Update per 2-D parameter: buf = mu*buf + g; g' = g + mu*buf (Nesterov); O = NS5(g'); p -= lr * O * sqrt(max(1,
rows/cols)). NS5 is the quintic iteration X <- aX + (bA + cA^2)X, A = XX^T, with the classic coefficients
(3.4445, -4.7750, 2.0315) that maximise the slope at zero and leave singular values roughly in [0.68, 1.13].

Options (docs/techniques.md#polar-express, #muoneq-r, #muon-weight-decay): `coefficients="polar_express"` uses
one (a, b, c) per iteration (Polar Express, Amsel et al. arXiv:2505.16932; PR #1344/#1787), which lands singular
values closer to 1 in the same 5 steps; `row_norm` divides each row of the Nesterov update by its L2 norm before
Newton-Schulz (MuonEq-R, PR #1217); `weight_decay` is decoupled, p <- p * (1 - lr * wd) (03-19 records onward).
What these options do at CPU scale (`pgolf ablate`), measured: docs/BENCHMARKS.md.

One implementation with and without a process group: under torch.distributed with world size > 1, rank r
orthogonalises parameters i with i % world == r, the updates are packed into one flat buffer and all-reduced (sum),
and every rank applies all of them (the baseline's scheme); without a process group everything runs locally. The
buffer is float32 where the baseline's is bfloat16: every slot has exactly one non-zero contributor, so float32 keeps
the update exact at twice the traffic (66 MB per step for the baseline's 16.5M Muon weights).
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.distributed as dist

from pgolf.optim.choices import NS_COEFFICIENTS  # noqa: F401  (re-exported; `optim.muon_ns`: see ns_schedule)
from pgolf.runtime import should_compile

CLASSIC_NS5 = (3.4445, -4.7750, 2.0315)
# Per-iteration coefficients for 5 steps (docs/techniques.md#polar-express, as used by PR #1787).
POLAR_EXPRESS = (
    (8.156554524902461, -22.48329292557795, 15.878769915207462),
    (4.042929935166739, -2.808917465908714, 0.5000178451051316),
    (3.8916678022926607, -2.772484153217685, 0.5060648178503393),
    (3.285753657755655, -2.3681294933425376, 0.46449024233003106),
    (2.3465413258596377, -1.7097828382687081, 0.42323551169305323),
)


def ns_schedule(name: str, steps: int) -> list[tuple[float, float, float]]:
    """The (a, b, c) of each iteration: the classic triple repeated, or Polar Express's (its last one repeated)."""
    if name == "classic":
        return [CLASSIC_NS5] * steps
    if name == "polar_express":
        return [POLAR_EXPRESS[min(i, len(POLAR_EXPRESS) - 1)] for i in range(steps)]
    raise ValueError(f"unknown Newton-Schulz coefficients {name!r}")


def zeropower_newton_schulz(g: torch.Tensor, steps: int = 5, coefficients: str | tuple = CLASSIC_NS5,
                            eps: float = 1e-7, dtype: torch.dtype = torch.bfloat16) -> torch.Tensor:
    """Approximate the orthogonal polar factor U V^T of a matrix g [rows, cols], or of each matrix of a batch
    g [..., rows, cols] (leading dims index independent matrices, each normalised by its own Frobenius norm).

    Runs in `dtype`; wide matrices are iterated as given and tall ones through their transpose, so that A = X X^T
    is the smaller Gram matrix. Returns g's shape and dtype.
    """
    schedule = ns_schedule(coefficients, steps) if isinstance(coefficients, str) else [coefficients] * steps
    x = g.to(dtype)
    transposed = g.size(-2) > g.size(-1)
    if transposed:
        x = x.mT
    x = x / (x.norm(dim=(-2, -1), keepdim=True) + eps)
    for a, b, c in schedule:
        A = x @ x.mT
        x = a * x + (b * A + c * (A @ A)) @ x
    return (x.mT if transposed else x).to(g.dtype)


class Muon(torch.optim.Optimizer):
    """Muon for 2-D parameters. `ns_dtype=None` uses bfloat16 on CUDA (fast, and accurate enough since NS only
    needs the singular values near 1) and float32 on CPU, where bfloat16 matmuls are slower, not faster.

    Parameters of the same shape are orthogonalised together as one batch (one batched matmul per iteration instead
    of one small matmul per parameter, so the step is not bound by kernel launches); the result for each matrix is
    the same as running them one by one. `lr`, `momentum` and
    `weight_decay` are read from `param_groups` at every step, so schedules can change them.
    """

    def __init__(self, params, lr: float = 0.02, momentum: float = 0.95, nesterov: bool = True,
                 backend_steps: int = 5, ns_dtype: torch.dtype | None = None, coefficients: str = "classic",
                 row_norm: bool = False, weight_decay: float = 0.0, compile: str = "off") -> None:
        ns_schedule(coefficients, 1)
        self.compile = compile  # `optim.muon_compile`: Newton-Schulz compiled, one fixed-shape graph per bank
        self.compile_backend = "inductor"
        self._compiled_ns = None
        super().__init__(params, dict(lr=lr, momentum=momentum, nesterov=nesterov, backend_steps=backend_steps,
                                      coefficients=coefficients, row_norm=row_norm, weight_decay=weight_decay))
        self.ns_dtype = ns_dtype
        for group in self.param_groups:
            for p in group["params"]:
                if p.ndim != 2:
                    raise ValueError(f"Muon takes 2-D parameters only (got shape {tuple(p.shape)})")

    def _orthogonalised(self, group: dict, owned: list[int]) -> dict[int, torch.Tensor]:
        """Momentum, Nesterov and Newton-Schulz for the parameters `owned` (indices into the group): index ->
        scaled float32 update."""
        params, mu = group["params"], group["momentum"]
        updates: dict[int, torch.Tensor] = {}
        for i in owned:
            p = params[i]
            state = self.state[p]
            if "momentum_buffer" not in state:
                state["momentum_buffer"] = torch.zeros_like(p.grad)
            buf = state["momentum_buffer"]
            buf.mul_(mu).add_(p.grad)
            g = p.grad.add(buf, alpha=mu) if group["nesterov"] else buf
            if group["row_norm"]:
                g = g / g.norm(dim=1, keepdim=True).clamp_min(1e-7)
            updates[i] = g
        buckets: dict[tuple[torch.Size, torch.dtype, torch.device], list[int]] = {}
        for i, g in updates.items():
            buckets.setdefault((g.shape, g.dtype, g.device), []).append(i)
        out = {}
        for (shape, _, device), idx in buckets.items():
            dtype = self.ns_dtype or (torch.bfloat16 if device.type == "cuda" else torch.float32)
            o = self._newton_schulz(device)(torch.stack([updates[i] for i in idx]), steps=group["backend_steps"],
                                            coefficients=group["coefficients"], dtype=dtype)
            o = o.float() * max(1.0, shape[0] / shape[1]) ** 0.5
            out.update(zip(idx, o.unbind(0)))
        return out

    def _newton_schulz(self, device: torch.device) -> Callable:
        """`zeropower_newton_schulz`, compiled (fullgraph, fixed shapes) when `compile` says so for `device`."""
        if not should_compile(self.compile, device):
            return zeropower_newton_schulz
        if self._compiled_ns is None:
            self._compiled_ns = torch.compile(zeropower_newton_schulz, fullgraph=True, dynamic=False,
                                              backend=self.compile_backend)
        return self._compiled_ns

    @torch.no_grad()
    def step(self, closure=None):
        loss = closure() if closure is not None else None
        distributed = dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1
        world, rank = (dist.get_world_size(), dist.get_rank()) if distributed else (1, 0)
        for group in self.param_groups:
            params = group["params"]
            if not params:
                continue
            owned = [i for i, p in enumerate(params) if i % world == rank and p.grad is not None]
            updates = self._orthogonalised(group, owned)
            if distributed:
                sizes = [p.numel() for p in params]
                flat = torch.zeros(sum(sizes), device=params[0].device, dtype=torch.float32)
                views = flat.split(sizes)
                for i, u in updates.items():
                    views[i].copy_(u.reshape(-1))
                dist.all_reduce(flat, op=dist.ReduceOp.SUM)
                updates = {i: v.view_as(p) for i, (v, p) in enumerate(zip(views, params))}
            lr, wd = group["lr"], group["weight_decay"]
            for i, p in enumerate(params):
                if wd:
                    p.mul_(1 - lr * wd)
                if i in updates:
                    p.add_(updates[i].to(p.dtype), alpha=-lr)
        return loss
