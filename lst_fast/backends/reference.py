"""Pure-PyTorch implementations of lst_fast's operators.

They are the CPU fallback when the compiled extension is missing and the oracle the native kernels are
tested against. The arithmetic is spelled out op by op (each product and sum rounded on its own, in the
kernels' "opmath" type) so that the kernels can match it bit for bit, up to the order of the per-sample
double-precision sums.
"""

from __future__ import annotations

import torch
from torch import Tensor

from lst_fast.backends.confidence import class_probability


def opmath_dtype(dtype: torch.dtype) -> torch.dtype:
    """Arithmetic type of the kernels: float32 for float16/bfloat16/float32, float64 for float64."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def _per_sample(t: Tensor, ndim: int) -> Tensor:
    """View a (N,) tensor as (N, 1, ..., 1) with `ndim` dimensions in all."""
    return t.reshape(t.shape[0], *([1] * (ndim - 1)))


def orthogonal_step(
    x: Tensor, target: Tensor, grad: Tensor, adv: Tensor, step_size: float, adv_step_size: float, lo: float, hi: float
) -> Tensor:
    """One LST step (docs/ALGORITHM.md, section 1); updates `adv` in place and returns the candidate.

    v = target - x; v_perp = v - (<g, v> / <g, g>) g (v itself where g == 0);
    adv = clamp(adv + adv_step_size / 2 * g, -adv_step_size, adv_step_size);
    candidate = clamp(x + step_size * v_perp - adv, lo, hi).
    """
    opmath = opmath_dtype(x.dtype)
    n = x.shape[0]
    g = grad.to(opmath)
    v = target.to(opmath) - x.to(opmath)
    g64 = g.to(torch.float64)
    v64 = v.to(torch.float64)
    gv = (g64 * v64).reshape(n, x[0].numel() if n else 0).sum(1)
    gg = (g64 * g64).reshape(n, x[0].numel() if n else 0).sum(1)
    coef = torch.where(gg > 0, gv / gg.where(gg > 0, 1.0), 0.0)
    v_perp = (v64 - _per_sample(coef, x.dim()) * g64).to(opmath)
    new_adv = (adv.to(opmath) + (adv_step_size / 2) * g).clamp(-adv_step_size, adv_step_size)
    candidate = ((x.to(opmath) + step_size * v_perp) - new_adv).clamp(lo, hi)
    adv.copy_(new_adv)
    return candidate.to(x.dtype)


def confidence_accept(logits, label, p0, threshold, x, candidate, grad, candidate_grad, confidence) -> Tensor:
    """Accept candidates whose source-class confidence dropped less than `threshold` below p0.

    The arguments are lst_fast.ops.confidence_accept's (tensors, and the float threshold), already
    checked. Where accepted, x and grad take the candidate's values and confidence its probability (all in
    place). Returns the accepted mask. NaN probabilities (non-finite logits, or a label outside
    [0, num_classes), as in the kernels) are never accepted.
    """
    k = logits.shape[1]
    in_range = (label >= 0) & (label < k)  # no host sync: the probability is NaN where it is not
    p = class_probability(logits, label.clamp(0, k - 1)).masked_fill(~in_range, float("nan"))
    accepted = (p0.to(torch.float64) - p) < threshold
    confidence.copy_(torch.where(accepted, p, confidence.to(torch.float64)))
    mask = _per_sample(accepted, x.dim())
    x.copy_(torch.where(mask, candidate, x))
    grad.copy_(torch.where(mask, candidate_grad, grad))
    return accepted


def simplex_points(vertices: Tensor, weights: Tensor) -> Tensor:
    """Convex combinations: vertices (N, K, *), weights (P, K) -> (N * P, *).

    Row n * P + p is sum_k weights[p, k] * vertices[n, k], summed in order of k in the opmath type.
    """
    opmath = opmath_dtype(vertices.dtype)
    n, k = vertices.shape[:2]
    w = weights.to(opmath)
    v = vertices.to(opmath).reshape(n, 1, k, vertices[0, 0].numel() if n and k else 0)
    acc = w[None, :, 0, None] * v[:, :, 0]
    for j in range(1, k):
        acc = acc + w[None, :, j, None] * v[:, :, j]
    return acc.to(vertices.dtype).reshape(n * weights.shape[0], *vertices.shape[2:])
