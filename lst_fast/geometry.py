"""Confidence over the region around the level set (SPEC.md section 2): along linear paths and over
triangles (convex hulls) between a source and its LST outputs. Every interpolated image comes from the
batched simplex-points operator, and the model runs without gradients in memory-sized chunks."""
from __future__ import annotations

from typing import Optional, Sequence, Union

import torch
from torch import Tensor

from lst_fast import ops, validation
from lst_fast.reference import class_probability
from lst_fast.traversal import eval_mode

DEFAULT_CHUNK_BYTES = 256 * 2**20  # model inputs per forward pass


def line_weights(steps: int = 21, dtype=torch.float64) -> Tensor:
    """(steps, 2) weights (1 - t, t) for t = 0, 1/(steps-1), ..., 1."""
    if steps < 2:
        raise ValueError(f"steps must be >= 2, got {steps}")
    t = torch.arange(steps, dtype=torch.float64) / (steps - 1)
    return torch.stack([1 - t, t], dim=1).to(dtype)


def triangle_weights(n: int = 10, dtype=torch.float64) -> Tensor:
    """Barycentric grid (P, 3) of (1 - a - b, a, b) for a, b in {0, 1/n, ..., 1} with a + b <= 1.

    Integer arithmetic, so all (n + 1)(n + 2) / 2 points are kept (n = 10: 66 points; the paper's code
    loses 2 of them to a floating-point test)."""
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    rows = [(n - i - j, i, j) for i in range(n + 1) for j in range(n + 1 - i)]
    return (torch.tensor(rows, dtype=torch.float64) / n).to(dtype)


@torch.no_grad()
def simplex_confidence(
    model: torch.nn.Module,
    vertices: Tensor,
    weights: Tensor,
    label: Tensor,
    *,
    mean: Optional[Union[Sequence[float], Tensor]] = None,
    std: Optional[Union[Sequence[float], Tensor]] = None,
    chunk_bytes: int = DEFAULT_CHUNK_BYTES,
) -> Tensor:
    """Confidence for `label` (N,) at every convex combination of per-sample vertices (N, K, C, H, W)
    with weights (P, K): returns (N, P)."""
    if vertices.dim() != 5:
        raise ValueError(f"vertices must have shape (N, K, C, H, W), got {tuple(vertices.shape)}")
    if weights.dim() != 2 or weights.shape[1] != vertices.shape[1]:
        raise ValueError(f"weights must have shape (P, {vertices.shape[1]}), got {tuple(weights.shape)}")
    n, _, c = vertices.shape[:3]
    p = weights.shape[0]
    if not isinstance(label, Tensor) or tuple(label.shape) != (n,) or label.is_floating_point():
        raise ValueError(f"label must be an integer tensor of shape ({n},)")
    label = label.to(device=vertices.device, dtype=torch.long)
    weights = weights.to(vertices.device)
    norm = validation.normalization(mean, std, c, vertices.device, vertices.dtype)
    per_sample = p * vertices[0, 0].numel() * vertices.element_size() if n else 1
    step = max(1, chunk_bytes // max(per_sample, 1))
    out = []
    with eval_mode(model):
        for start in range(0, n, step):
            points = ops.simplex_points(vertices[start : start + step], weights)
            if norm is not None:
                points = (points - norm[0]) / norm[1]
            logits = model(points)  # (m * P, classes)
            out.append(class_probability(logits, label[start : start + step].repeat_interleave(p)).view(-1, p))
    return torch.cat(out).float() if out else vertices.new_empty(0, p, dtype=torch.float32)


def linear_path_confidence(model, source: Tensor, end: Tensor, label: Tensor, steps: int = 21, **kw) -> Tensor:
    """Confidence for `label` along (1 - t) source + t end: (N, steps)."""
    return simplex_confidence(model, torch.stack([source, end], 1), line_weights(steps), label, **kw)


def triangle_confidence(model, source: Tensor, end1: Tensor, end2: Tensor, label: Tensor, n: int = 10, **kw) -> Tensor:
    """Confidence for `label` over the triangle grid of (source, end1, end2): (N, (n+1)(n+2)/2)."""
    return simplex_confidence(model, torch.stack([source, end1, end2], 1), triangle_weights(n), label, **kw)
