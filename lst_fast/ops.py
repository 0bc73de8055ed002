"""Typed wrappers of lst_fast's three operators.

Each wrapper calls the compiled kernel (torch.ops.lst_fast.*) when one is registered for the input's
device and the pure-PyTorch reference otherwise (or when asked with backend="reference").
The fake (meta) kernels let torch.compile trace the ops; they are registered only when the extension
defined the ops, so a missing or broken build never breaks `import lst_fast`.
"""
from __future__ import annotations

from typing import Tuple

import torch
from torch import Tensor

from lst_fast import reference
from lst_fast._extension import has_native_kernel, has_ops

BACKENDS = ("auto", "native", "reference")


def _use_native(name: str, device: torch.device, backend: str) -> bool:
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if backend == "reference":
        return False
    native = has_native_kernel(name, device.type)
    if backend == "native" and not native:
        from lst_fast._extension import backend_info

        raise RuntimeError(
            f"backend='native' but lst_fast::{name} has no compiled kernel for {device.type} "
            f"(backend_info: {backend_info()})"
        )
    return native


def orthogonal_step(
    x: Tensor,
    target: Tensor,
    grad: Tensor,
    adv: Tensor,
    *,
    step_size: float,
    adv_step_size: float,
    bounds: Tuple[float, float] = (0.0, 1.0),
    backend: str = "auto",
) -> Tensor:
    """Fused LST step: returns the candidate and updates `adv` in place (see reference.orthogonal_step)."""
    lo, hi = float(bounds[0]), float(bounds[1])
    if _use_native("orthogonal_step", x.device, backend):
        return torch.ops.lst_fast.orthogonal_step.default(
            x, target, grad, adv, float(step_size), float(adv_step_size), lo, hi
        )
    return reference.orthogonal_step(x, target, grad, adv, float(step_size), float(adv_step_size), lo, hi)


def confidence_accept(
    logits: Tensor,
    label: Tensor,
    p0: Tensor,
    threshold: float,
    x: Tensor,
    candidate: Tensor,
    grad: Tensor,
    candidate_grad: Tensor,
    confidence: Tensor,
    *,
    backend: str = "auto",
) -> Tensor:
    """Confidence-constrained accept (in place on x, grad, confidence); returns the accepted mask."""
    if _use_native("confidence_accept", x.device, backend):
        return torch.ops.lst_fast.confidence_accept.default(
            logits, label, p0, float(threshold), x, candidate, grad, candidate_grad, confidence
        )
    return reference.confidence_accept(
        logits, label, p0, float(threshold), x, candidate, grad, candidate_grad, confidence
    )


def simplex_points(vertices: Tensor, weights: Tensor, *, backend: str = "auto") -> Tensor:
    """Convex combinations of per-sample vertices (N, K, *) with weights (P, K): (N * P, *)."""
    if _use_native("simplex_points", vertices.device, backend):
        return torch.ops.lst_fast.simplex_points.default(vertices, weights)
    return reference.simplex_points(vertices, weights)


def _register_fakes() -> None:
    @torch.library.register_fake("lst_fast::orthogonal_step")
    def _orthogonal_step_fake(x, target, grad, adv, step_size, adv_step_size, lo, hi):
        torch._check(target.shape == x.shape and grad.shape == x.shape and adv.shape == x.shape)
        return torch.empty_like(x)

    @torch.library.register_fake("lst_fast::confidence_accept")
    def _confidence_accept_fake(logits, label, p0, threshold, x, candidate, grad, candidate_grad, confidence):
        torch._check(logits.dim() == 2 and logits.shape[0] == x.shape[0])
        return torch.empty((x.shape[0],), dtype=torch.bool, device=x.device)

    @torch.library.register_fake("lst_fast::simplex_points")
    def _simplex_points_fake(vertices, weights):
        torch._check(weights.dim() == 2 and weights.shape[1] == vertices.shape[1])
        return vertices.new_empty((vertices.shape[0] * weights.shape[0], *vertices.shape[2:]))


if has_ops():
    _register_fakes()
