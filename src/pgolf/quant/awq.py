"""AWQ-lite: a few salient input-column groups at a wider width inside the same GPTQ solve (PR #1908; used by PRs
#1945, #2014, #2060; docs/techniques.md#quantization-and-export).

AWQ proper (arXiv:2306.00978) rescales salient input channels before quantization. PR #1908 keeps the name and the
saliency but not the rescaling: it spends more bits where the activations say they matter.

1. During GPTQ calibration, every linear layer's per-input-channel activation RMS (`HessianCollector.activation_rms`;
   diag(H) / rows, so no second pass).
2. Every GPTQ matrix W [rows, cols] whose width is below `awq_bits` scores its whole groups of `awq_group`
   consecutive columns (a tail shorter than a group is never chosen): saliency_j = act_rms_j * mean_i |W_ij|,
   summed over the group's columns.
3. The `awq_top` most salient groups are quantized at `awq_bits` (int8) inside the same full-Hessian solve
   (`gptq.FineColumns`) on a finer per-row grid: the row's clip spread over qmax(awq_bits) levels, i.e. the row's
   step x qmax(bits) / qmax(awq_bits) (PR #1908's s_hi; derived from the stored step, so it costs no bytes,
   `schemes.awq_scale`); every other column keeps the matrix's width. LQER then corrects the result as usual.

Which groups compete: PR #1908's code (and every record that ran it, e.g. PR #2060's logs: one `awqgrpint8` group,
in `tok_emb.weight`) ranks the groups of ALL matrices together and takes the top `awq_top` of the whole model
(`per_matrix=False`, what the recipe uses); its README's "one group per matrix" reading is `per_matrix=True`.
Saliencies of different matrices are comparable because act_rms is a true RMS (tokens x applications counted).
"""

from __future__ import annotations

import torch

from pgolf.quant.gptq import FineColumns
from pgolf.quant.schemes import awq_scale


def group_saliency(w: torch.Tensor, act_rms: torch.Tensor, group: int) -> torch.Tensor:
    """Saliency of each whole group of `group` columns of `w` [rows, cols]: sum over the group of
    act_rms_j * mean_i |w_ij| (float64 [cols // group])."""
    n = w.shape[1] // group
    per_column = act_rms.double().reshape(-1)[:w.shape[1]] * w.double().abs().mean(dim=0)
    return per_column[:n * group].reshape(n, group).sum(dim=1)


def select_groups(saliency: dict[str, torch.Tensor], top: int, group: int, *, per_matrix: bool = False
                  ) -> dict[str, list[int]]:
    """Matrix name -> first columns (increasing) of its chosen groups: the `top` most salient groups of the whole
    model, or of each matrix with `per_matrix`. Ties go to the earlier matrix (in `saliency`'s order), then the
    earlier group, so the choice is deterministic."""
    if top <= 0:
        return {}
    order = {name: i for i, name in enumerate(saliency)}
    ranked = sorted(((float(s), name, g) for name, scores in saliency.items() for g, s in enumerate(scores.tolist())),
                    key=lambda c: (-c[0], order[c[1]], c[2]))
    chosen: dict[str, list[int]] = {}
    taken = 0
    for _, name, g in ranked:
        picked = chosen.setdefault(name, [])
        if per_matrix and len(picked) >= top:
            continue
        picked.append(g * group)
        taken += 1
        if not per_matrix and taken >= top:
            break
    return {name: sorted(starts) for name, starts in chosen.items() if starts}


def fine_columns(cols: int, starts: list[int], group: int, scale: torch.Tensor, bits: int, awq_bits: int
                 ) -> FineColumns:
    """The wide columns of a matrix with `cols` columns (groups at `starts`) and their grid at `awq_bits`, from
    the matrix's per-row `scale` (fp16-representable) at `bits`."""
    mask = torch.zeros(cols, dtype=torch.bool)
    for start in starts:
        mask[start:start + group] = True
    return FineColumns(mask, awq_scale(scale, bits, awq_bits), awq_bits)
