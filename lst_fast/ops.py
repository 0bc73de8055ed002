"""lst_fast's three operators: their schemas, their one implementation, and typed wrappers.

torch.ops.lst_fast.{orthogonal_step, confidence_accept, simplex_points} are defined here, in Python, so
they exist whether or not the compiled extension loaded. Every call, through the dispatcher or through
the wrappers below, runs the argument checks of lst_fast.op_checks (the only place where the rules and
messages are written), then the compiled kernel (torch.ops.lst_fast_kernels.*, csrc/) when one is
registered for the input's device, and the pure-PyTorch reference otherwise (or when asked with
backend="reference"). So the same arguments get the same answer on every backend, and the checks run
once per call on either path. The compiled kernels keep only terse guards against reading or writing
outside their tensors, for direct calls (csrc/kernel_guards.h).

The fake kernels let torch.compile and torch.library.opcheck trace the ops without running them; they
run the same checks, minus the memory-address comparisons that fake tensors cannot make.
"""

from __future__ import annotations

from typing import Callable, Dict, Tuple

import torch
from torch import Tensor

from lst_fast import op_checks, reference
from lst_fast._extension import KERNEL_NAMESPACE, cuda_module_name, has_native_kernel, has_ops
from lst_fast.cuda_compat import cuda_kernels_fit
from lst_fast.settings import BACKENDS

# The public schemas. The compiled kernels (csrc/lst_fast.cpp) declare the same ones under
# KERNEL_NAMESPACE; tests/test_ops.py::test_kernel_schemas_match_the_public_ones holds them together.
SCHEMAS = {
    # Fused LST step: projects (target - x) orthogonally to grad per sample, updates the accumulated
    # adversarial term `adv` in place and returns the clamped candidate.
    "orthogonal_step": "orthogonal_step(Tensor x, Tensor target, Tensor grad, Tensor(a!) adv, float step_size, "
    "float adv_step_size, float lo, float hi) -> Tensor",
    # Confidence-constrained accept: where p0 - softmax(logits)[label] < threshold, copies the candidate
    # and its gradient into x and grad and its confidence into `confidence`. Returns the accepted mask.
    "confidence_accept": "confidence_accept(Tensor logits, Tensor label, Tensor p0, float threshold, "
    "Tensor(a!) x, Tensor candidate, Tensor(b!) grad, Tensor candidate_grad, "
    "Tensor(c!) confidence) -> Tensor",
    # Batched convex combinations: vertices (N, K, *), weights (P, K) -> (N * P, *).
    "simplex_points": "simplex_points(Tensor vertices, Tensor weights) -> Tensor",
}


def check_backend(backend: str) -> None:
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")


def _use_native(name: str, device: torch.device, backend: str) -> bool:
    if backend == "reference":
        return False
    native = has_native_kernel(name, device.type)
    # An old driver or a GPU the module has no code for: the pure-PyTorch operators, warned once per GPU.
    if native and device.type == "cuda" and not cuda_kernels_fit(device, cuda_module_name()):
        native = False
    if backend == "native" and not native:
        from lst_fast._extension import backend_info

        raise RuntimeError(
            f"backend='native' but lst_fast::{name} has no compiled kernel for {device.type} "
            f"(backend_info: {backend_info()})"
        )
    return native


def _kernel(name: str) -> Callable[..., Tensor]:
    return getattr(getattr(torch.ops, KERNEL_NAMESPACE), name).default


# -- the implementations: checks, then the kernel or the reference -----------------------------------------
# Registered below as the ops' kernels for every device (CompositeExplicitAutograd); `backend` keeps
# its default there.


def _orthogonal_step(
    x: Tensor,
    target: Tensor,
    grad: Tensor,
    adv: Tensor,
    step_size: float,
    adv_step_size: float,
    lo: float,
    hi: float,
    backend: str = "auto",
) -> Tensor:
    op_checks.check_orthogonal_step(x, target, grad, adv, step_size, adv_step_size, lo, hi)
    if _use_native("orthogonal_step", x.device, backend):
        return _kernel("orthogonal_step")(x, target, grad, adv, step_size, adv_step_size, lo, hi)
    return reference.orthogonal_step(x, target, grad, adv, step_size, adv_step_size, lo, hi)


def _confidence_accept(
    logits: Tensor,
    label: Tensor,
    p0: Tensor,
    threshold: float,
    x: Tensor,
    candidate: Tensor,
    grad: Tensor,
    candidate_grad: Tensor,
    confidence: Tensor,
    backend: str = "auto",
) -> Tensor:
    args = (logits, label, p0, threshold, x, candidate, grad, candidate_grad, confidence)
    op_checks.check_confidence_accept(*args)
    if _use_native("confidence_accept", x.device, backend):
        return _kernel("confidence_accept")(*args)
    return reference.confidence_accept(*args)


def _simplex_points(vertices: Tensor, weights: Tensor, backend: str = "auto") -> Tensor:
    op_checks.check_simplex_points(vertices, weights)
    if _use_native("simplex_points", vertices.device, backend):
        return _kernel("simplex_points")(vertices, weights)
    return reference.simplex_points(vertices, weights)


# -- the typed wrappers ------------------------------------------------------------------------------------
# backend="auto" goes through the dispatcher (torch.compile sees one opaque op); "native" and "reference"
# call the implementation with that choice. Non-tensors are refused here, before the dispatcher's own
# parser, so that the message is ours on every path.


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
    check_backend(backend)
    op_checks.require_tensors("lst_fast::orthogonal_step", x=x, target=target, grad=grad, adv=adv)
    args = (x, target, grad, adv, float(step_size), float(adv_step_size), float(bounds[0]), float(bounds[1]))
    if backend == "auto":
        return torch.ops.lst_fast.orthogonal_step.default(*args)
    return _orthogonal_step(*args, backend=backend)


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
    """Confidence-constrained accept (in place on x, grad, confidence); returns the accepted mask.

    A label outside [0, num_classes) gives that sample a NaN probability: it is not accepted."""
    check_backend(backend)
    op_checks.require_tensors(
        "lst_fast::confidence_accept",
        logits=logits,
        label=label,
        p0=p0,
        x=x,
        candidate=candidate,
        grad=grad,
        candidate_grad=candidate_grad,
        confidence=confidence,
    )
    args = (logits, label, p0, float(threshold), x, candidate, grad, candidate_grad, confidence)
    if backend == "auto":
        return torch.ops.lst_fast.confidence_accept.default(*args)
    return _confidence_accept(*args, backend=backend)


def simplex_points(vertices: Tensor, weights: Tensor, *, backend: str = "auto") -> Tensor:
    """Convex combinations of per-sample vertices (N, K, *) with weights (P, K): (N * P, *)."""
    check_backend(backend)
    op_checks.require_tensors("lst_fast::simplex_points", vertices=vertices, weights=weights)
    if backend == "auto":
        return torch.ops.lst_fast.simplex_points.default(vertices, weights)
    return _simplex_points(vertices, weights, backend=backend)


# -- registration ------------------------------------------------------------------------------------------


def _orthogonal_step_fake(x, target, grad, adv, step_size, adv_step_size, lo, hi):
    op_checks.check_orthogonal_step(x, target, grad, adv, step_size, adv_step_size, lo, hi, addresses=False)
    return torch.empty_like(x)


def _confidence_accept_fake(logits, label, p0, threshold, x, candidate, grad, candidate_grad, confidence):
    op_checks.check_confidence_accept(
        logits, label, p0, threshold, x, candidate, grad, candidate_grad, confidence, addresses=False
    )
    return x.new_empty((x.shape[0],), dtype=torch.bool)


def _simplex_points_fake(vertices, weights):
    op_checks.check_simplex_points(vertices, weights)
    return vertices.new_empty((vertices.shape[0] * weights.shape[0], *vertices.shape[2:]))


_IMPLEMENTATIONS: Dict[str, Tuple[Callable[..., Tensor], Callable[..., Tensor]]] = {
    "orthogonal_step": (_orthogonal_step, _orthogonal_step_fake),
    "confidence_accept": (_confidence_accept, _confidence_accept_fake),
    "simplex_points": (_simplex_points, _simplex_points_fake),
}


def _define() -> torch.library.Library:
    try:
        library = torch.library.Library("lst_fast", "DEF")
        for schema in SCHEMAS.values():
            library.define(schema)
    except RuntimeError as error:  # a lst_fast._C from before the ops moved here defines them itself
        raise ImportError(
            f"the lst_fast ops are already defined ({str(error).splitlines()[0]}); the compiled "
            "extension is from an older lst_fast: rebuild it (pip install --no-build-isolation .)"
        ) from None
    for name, (implementation, fake) in _IMPLEMENTATIONS.items():
        library.impl(name, implementation, "CompositeExplicitAutograd")
        torch.library.register_fake(f"lst_fast::{name}", fake, lib=library)
        if has_ops():  # the compiled kernel traces with the same output (opcheck runs it on its own too)
            torch.library.register_fake(f"{KERNEL_NAMESPACE}::{name}", fake)
    return library


_LIBRARY = _define()  # lives as long as the module, and the ops with it
