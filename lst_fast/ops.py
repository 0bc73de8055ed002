"""lst_fast's three operators: their schemas, their one implementation, and typed wrappers.

torch.ops.lst_fast.{orthogonal_step, confidence_accept, simplex_points} are defined here, in Python, so
they exist whether or not the compiled extension loaded. Every call, through the dispatcher or through
the wrappers below, runs the argument checks of lst_fast.backends.op_checks (the only place where the rules and
messages are written), then the compiled kernel (torch.ops.lst_fast_kernels.*, csrc/) when one is
registered for the input's device, and the pure-PyTorch reference otherwise (or when asked with
backend="reference"). So the same arguments get the same answer on every backend, and the checks run
once per call on either path. The compiled kernels keep only terse guards against reading or writing
outside their tensors, for direct calls (csrc/kernel_guards.h).

The fake kernels let torch.compile and torch.library.opcheck trace the ops without running them; they
run the same checks, minus the memory-address comparisons that fake tensors cannot make.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, Tuple

import torch
from torch import Tensor

from lst_fast.backends import op_checks, reference
from lst_fast.backends._extension import KERNEL_NAMESPACE, cuda_module_name, has_native_kernel, has_ops
from lst_fast.backends.cuda_compat import cuda_kernels_fit
from lst_fast.backends.names import check_backend
from lst_fast.errors import EnvironmentFault, MissingDependency

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


def _tensor_arguments(schema: str) -> Tuple[Tuple[int, str], ...]:
    """(position, name) of each Tensor argument of a schema, so that the wrappers' TypeError names them."""
    arguments = schema[schema.index("(") + 1 : schema.index(") ->")].split(", ")
    return tuple((i, arg.rsplit(" ", 1)[1]) for i, arg in enumerate(arguments) if arg.startswith("Tensor"))


_TENSOR_ARGUMENTS = {name: _tensor_arguments(schema) for name, schema in SCHEMAS.items()}


def _use_native(name: str, device: torch.device, backend: str) -> bool:
    if backend == "reference":
        return False
    native = has_native_kernel(name, device.type)
    # An old driver or a GPU the module has no code for: the pure-PyTorch operators, warned once per GPU.
    if native and device.type == "cuda" and not cuda_kernels_fit(device, cuda_module_name()):
        native = False
    if backend == "native" and not native:
        from lst_fast.backends._extension import backend_info

        raise EnvironmentFault(
            f"backend='native' but lst_fast::{name} has no compiled kernel for {device.type} "
            f"(backend_info: {backend_info()})"
        )
    return native


def _kernel(name: str) -> Callable[..., Tensor]:
    return getattr(getattr(torch.ops, KERNEL_NAMESPACE), name).default


# -- the implementation: checks, then the kernel or the reference -----------------------------------------
# Registered below as each op's kernel for every device (CompositeExplicitAutograd); `backend` keeps its
# default there. The arguments come in the schema's order; the checks put every tensor on x's device, so
# the first argument's device is the call's.


def _implementation(name: str, check: Callable[..., None], fallback: Callable[..., Tensor]) -> Callable[..., Tensor]:
    def implementation(*args: Any, backend: str = "auto") -> Tensor:
        check(*args)
        if _use_native(name, args[0].device, backend):
            return _kernel(name)(*args)
        return fallback(*args)

    implementation.__name__ = f"_{name}"
    return implementation


def _call(name: str, args: Tuple[Any, ...], backend: str) -> Tensor:
    """The op through the dispatcher (backend="auto"), else its implementation with that backend."""
    if backend == "auto":
        return getattr(torch.ops.lst_fast, name).default(*args)
    return _IMPLEMENTATIONS[name](*args, backend=backend)


def _require_tensors(name: str, *args: object) -> None:
    """TypeError naming the first tensor argument of the schema that is not a tensor."""
    op_checks.require_tensors(f"lst_fast::{name}", **{arg: args[i] for i, arg in _TENSOR_ARGUMENTS[name]})


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
    """Fused LST step: returns the candidate and updates `adv` in place.

    Per sample, with g = grad: v = target - x; v_perp = v - (<g, v> / <g, g>) g (v itself where g == 0);
    adv = clamp(adv + adv_step_size / 2 * g, -adv_step_size, adv_step_size);
    candidate = clamp(x + step_size * v_perp - adv, bounds). Inner products in float64.

    Args:
        x: the iterates (N, *), float16, bfloat16, float32 or float64.
        target: the targets, x's shape and type.
        grad: the input gradient of the source-class confidence at x, x's shape and type.
        adv: the accumulated adversarial term, x's shape and type; updated in place.
        step_size: the step toward the target.
        adv_step_size: the adversarial term's step and bound.
        bounds: (lo, hi), the pixel range the candidate is clamped to.
        backend: "auto" (the compiled kernel where one is registered for the device, else the
            pure-PyTorch operator), "native" (the compiled kernel; RuntimeError where there is none) or
            "reference" (the pure-PyTorch operator).

    Returns:
        The candidate (N, *), x's shape and type.
    """
    check_backend(backend)
    _require_tensors("orthogonal_step", x, target, grad, adv)
    args = (x, target, grad, adv, float(step_size), float(adv_step_size), float(bounds[0]), float(bounds[1]))
    return _call("orthogonal_step", args, backend)


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

    p = softmax(logits)[label] (a stable log-sum-exp, float64); where p0 - p < threshold, x and grad take
    the candidate's values and confidence takes p. A label outside [0, num_classes) gives that sample a
    NaN probability: it is not accepted.

    Args:
        logits: the candidates' logits (N, K).
        label: the class held (N,), integers.
        p0: the confidence on the clean source (N,).
        threshold: the largest drop below p0 that is accepted.
        x: the iterates (N, *); updated in place.
        candidate: the candidates (N, *), x's shape.
        grad: the gradient at x (N, *); updated in place.
        candidate_grad: the gradient at the candidates (N, *).
        confidence: the confidence at x (N,); updated in place.
        backend: "auto", "native" or "reference", as for `orthogonal_step`.

    Returns:
        The accepted mask (N,), bool.
    """
    check_backend(backend)
    _require_tensors("confidence_accept", logits, label, p0, threshold, x, candidate, grad, candidate_grad, confidence)
    args = (logits, label, p0, float(threshold), x, candidate, grad, candidate_grad, confidence)
    return _call("confidence_accept", args, backend)


def simplex_points(vertices: Tensor, weights: Tensor, *, backend: str = "auto") -> Tensor:
    """Convex combinations of per-sample vertices, straight into one model-input batch.

    Args:
        vertices: per-sample vertices (N, K, *); K = 2 for lines, 3 for triangles.
        weights: the weights (P, K), e.g. `lst_fast.geometry.triangle_weights()`.
        backend: "auto", "native" or "reference", as for `orthogonal_step`.

    Returns:
        (N * P, *): row n * P + p is sum_k weights[p, k] * vertices[n, k].
    """
    check_backend(backend)
    _require_tensors("simplex_points", vertices, weights)
    return _call("simplex_points", (vertices, weights), backend)


# -- registration ------------------------------------------------------------------------------------------
# The fake kernels run the same checks, minus the memory comparisons, and return an empty output of the
# right shape (for confidence_accept: one flag per row of logits, which the checks match to x).


def _orthogonal_step_fake(*args: Any) -> Tensor:
    op_checks.check_orthogonal_step(*args, addresses=False)
    return torch.empty_like(args[0])


def _confidence_accept_fake(*args: Any) -> Tensor:
    op_checks.check_confidence_accept(*args, addresses=False)
    logits = args[0]
    return logits.new_empty((logits.shape[0],), dtype=torch.bool)


def _simplex_points_fake(vertices: Tensor, weights: Tensor) -> Tensor:
    op_checks.check_simplex_points(vertices, weights)
    return vertices.new_empty((vertices.shape[0] * weights.shape[0], *vertices.shape[2:]))


_IMPLEMENTATIONS: Dict[str, Callable[..., Tensor]] = {
    "orthogonal_step": _implementation("orthogonal_step", op_checks.check_orthogonal_step, reference.orthogonal_step),
    "confidence_accept": _implementation(
        "confidence_accept", op_checks.check_confidence_accept, reference.confidence_accept
    ),
    "simplex_points": _implementation("simplex_points", op_checks.check_simplex_points, reference.simplex_points),
}
_FAKES: Dict[str, Callable[..., Tensor]] = {
    "orthogonal_step": _orthogonal_step_fake,
    "confidence_accept": _confidence_accept_fake,
    "simplex_points": _simplex_points_fake,
}


def _define() -> torch.library.Library:
    try:
        library = torch.library.Library("lst_fast", "DEF")
        for schema in SCHEMAS.values():
            library.define(schema)
    except RuntimeError as error:  # a lst_fast._C from before the ops moved here defines them itself
        raise MissingDependency(
            f"the lst_fast ops are already defined ({str(error).splitlines()[0]}); the compiled "
            "extension is from an older lst_fast: rebuild it (pip install --no-build-isolation .)"
        ) from None
    for name, implementation in _IMPLEMENTATIONS.items():
        fake = _FAKES[name]
        library.impl(name, implementation, "CompositeExplicitAutograd")
        torch.library.register_fake(f"lst_fast::{name}", fake, lib=library)
        if has_ops():  # the compiled kernel traces with the same output (opcheck runs it on its own too)
            torch.library.register_fake(f"{KERNEL_NAMESPACE}::{name}", fake)
    return library


_LIBRARY = _define()  # lives as long as the module, and the ops with it
