"""Typed wrappers of lst_fast's three operators.

Each wrapper calls the compiled kernel (torch.ops.lst_fast.*) when one is registered for the input's
device and the pure-PyTorch reference otherwise (or when asked with backend="reference"). The kernels
check their arguments in C++ (csrc/op_checks.h); before the reference runs, the same checks run here,
with the same messages (once per call on either path, not twice in the LST loop's hot path), so that
the same arguments get the same answer on every backend: the
reference rejects a NaN step, a negative adversarial step, aliased outputs or mixed dtypes exactly as
the kernels do. They read shapes, dtypes, devices and addresses only, never tensor values (no host sync
on CUDA). One contract the checks cannot cover without reading values: a label outside [0, K) in
confidence_accept gives a NaN probability, so that sample is not accepted and x, grad and confidence
keep their values for it (on every backend).
The fake (meta) kernels let torch.compile trace the ops; they are registered only when the extension
defined the ops, so a missing or broken build never breaks `import lst_fast`.
"""
from __future__ import annotations

import math
from typing import Tuple

import torch
from torch import Tensor

from lst_fast import reference
from lst_fast._extension import cuda_module_name, has_native_kernel, has_ops
from lst_fast.cuda_compat import cuda_kernels_fit
from lst_fast.settings import BACKENDS


def _use_native(name: str, device: torch.device, backend: str) -> bool:
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
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


# -- argument checks shared by every backend (mirrors csrc/op_checks.h) ----------------------------------

_FLOAT_DTYPES = (torch.float32, torch.float64, torch.float16, torch.bfloat16)
_DTYPE_NAMES = {  # c10::toString's names, as in the kernels' messages
    torch.float32: "Float", torch.float64: "Double", torch.float16: "Half", torch.bfloat16: "BFloat16",
    torch.int64: "Long", torch.int32: "Int", torch.int16: "Short", torch.int8: "Char", torch.uint8: "Byte",
    torch.bool: "Bool", torch.complex64: "ComplexFloat", torch.complex128: "ComplexDouble",
}
_SHARED_MEMORY = ("some elements of the input tensor and the written-to tensor refer to a single memory "
                  "location; clone() one of them")


def _fail(message: str) -> None:
    raise RuntimeError(message)


def _dtype_str(t: Tensor) -> str:
    return _DTYPE_NAMES.get(t.dtype, str(t.dtype).replace("torch.", ""))


def _shape_str(t: Tensor) -> str:
    return "[" + ", ".join(str(d) for d in t.shape) + "]"


def _num_str(v: float) -> str:
    return f"{v:.9g}"


def _require_tensors(op: str, **tensors) -> None:
    for name, t in tensors.items():
        if not isinstance(t, Tensor):
            raise TypeError(f"{op}: {name} must be a tensor, got {type(t).__name__}")


def _check_data_tensor(t: Tensor, name: str, ref: Tensor, ref_name: str, op: str) -> None:
    if t.dtype not in _FLOAT_DTYPES:
        _fail(f"{op}: {name} must be float32, float64, float16 or bfloat16, got {_dtype_str(t)}")
    if t.device != ref.device:
        _fail(f"{op}: {name} is on {t.device} but {ref_name} is on {ref.device}; all tensors must be on one device")
    if t.dtype != ref.dtype:
        _fail(f"{op}: {name} has dtype {_dtype_str(t)} but {ref_name} has dtype {_dtype_str(ref)}")
    if t.shape != ref.shape:
        _fail(f"{op}: {name} has shape {_shape_str(t)} but {ref_name} has shape {_shape_str(ref)}")


def _non_overlapping_and_dense(t: Tensor) -> bool:
    """c10's is_non_overlapping_and_dense: the elements fill one block of numel() slots, in any order."""
    if t.is_contiguous():
        return True
    dims = sorted((stride, size) for size, stride in zip(t.shape, t.stride()) if size >= 2)
    expected = 1
    for stride, size in dims:
        if stride != expected:
            return False
        expected *= size
    return True


def _check_no_internal_overlap(op: str, name: str, t: Tensor) -> None:
    """at::assert_no_internal_overlap: a written tensor whose elements share memory (an expanded one)."""
    if _non_overlapping_and_dense(t):
        return
    if any(stride == 0 and size > 1 for size, stride in zip(t.shape, t.stride())):
        _fail(f"{op}: {name} has internal overlap (more than one element refers to a single memory location); "
              f"pass a tensor that owns its memory, e.g. {name}.clone()")


def _check_no_overlap(op: str, written: str, a: Tensor, other: str, b: Tensor) -> None:
    """at::assert_no_overlap: a written tensor that shares memory with another argument."""
    if a is b:
        _fail(f"{op}: {written} and {other} are the same tensor: {_SHARED_MEMORY}")
    if a.numel() == 0 or b.numel() == 0 or a.device.type == "meta" or torch.compiler.is_compiling():
        return  # nothing to compare (or no memory: meta and fake tensors)
    if not (_non_overlapping_and_dense(a) and _non_overlapping_and_dense(b)):
        return  # too hard to tell, as for the kernels (which then work on contiguous copies)
    a_begin, b_begin = a.data_ptr(), b.data_ptr()
    a_end, b_end = a_begin + a.numel() * a.element_size(), b_begin + b.numel() * b.element_size()
    if a_begin < b_end and b_begin < a_end:
        _fail(f"{op}: {written} and {other} overlap in memory: {_SHARED_MEMORY}")


def check_orthogonal_step_args(x, target, grad, adv, step_size, adv_step_size, lo, hi) -> None:
    """The kernels' checks of orthogonal_step's arguments; RuntimeError (TypeError for a non-tensor)."""
    op = "lst_fast::orthogonal_step"
    _require_tensors(op, x=x, target=target, grad=grad, adv=adv)
    if x.dim() < 1:
        _fail(f"{op}: x must have a batch dimension, got shape {_shape_str(x)}")
    for name, t in (("x", x), ("target", target), ("grad", grad), ("adv", adv)):
        _check_data_tensor(t, name, x, "x", op)
    _check_no_internal_overlap(op, "adv", adv)
    for name, t in (("x", x), ("target", target), ("grad", grad)):
        _check_no_overlap(op, "adv", adv, name, t)
    if not math.isfinite(step_size):
        _fail(f"{op}: step_size must be finite, got {_num_str(step_size)}")
    if not (math.isfinite(adv_step_size) and adv_step_size >= 0):
        _fail(f"{op}: adv_step_size must be finite and >= 0, got {_num_str(adv_step_size)}")
    if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
        _fail(f"{op}: bounds must be finite with lo < hi, got lo={_num_str(lo)} hi={_num_str(hi)}")


def check_confidence_accept_args(logits, label, p0, threshold, x, candidate, grad, candidate_grad,
                                 confidence) -> None:
    """The kernels' checks of confidence_accept's arguments; RuntimeError (TypeError for a non-tensor)."""
    op = "lst_fast::confidence_accept"
    _require_tensors(op, logits=logits, label=label, p0=p0, x=x, candidate=candidate, grad=grad,
                     candidate_grad=candidate_grad, confidence=confidence)
    if x.dim() < 1:
        _fail(f"{op}: x must have a batch dimension, got shape {_shape_str(x)}")
    n = x.shape[0]
    for name, t in (("candidate", candidate), ("grad", grad), ("candidate_grad", candidate_grad)):
        _check_data_tensor(t, name, x, "x", op)
    if logits.dim() != 2 or logits.shape[0] != n:
        _fail(f"{op}: logits must have shape ({n}, num_classes), got {_shape_str(logits)}")
    if logits.shape[1] < 1:
        _fail(f"{op}: logits must have at least one class, got {_shape_str(logits)}")
    if logits.dtype not in _FLOAT_DTYPES:
        _fail(f"{op}: logits must be a floating tensor, got {_dtype_str(logits)}")
    if label.dim() != 1 or label.shape[0] != n:
        _fail(f"{op}: label must have shape ({n}), got {_shape_str(label)}")
    if label.dtype != torch.int64:
        _fail(f"{op}: label must be int64, got {_dtype_str(label)}")
    if p0.dim() != 1 or p0.shape[0] != n:
        _fail(f"{op}: p0 must have shape ({n}), got {_shape_str(p0)}")
    if p0.dtype not in (torch.float32, torch.float64):
        _fail(f"{op}: p0 must be float32 or float64, got {_dtype_str(p0)}")
    if confidence.shape != p0.shape or confidence.dtype != p0.dtype:
        _fail(f"{op}: confidence must match p0 (shape {_shape_str(p0)}, dtype {_dtype_str(p0)}), got shape "
              f"{_shape_str(confidence)} dtype {_dtype_str(confidence)}")
    for t in (logits, label, p0, confidence):
        if t.device != x.device:
            _fail(f"{op}: all tensors must be on one device; x is on {x.device} but another argument is on {t.device}")
    _check_no_internal_overlap(op, "x", x)
    _check_no_internal_overlap(op, "grad", grad)
    _check_no_overlap(op, "x", x, "candidate", candidate)
    _check_no_overlap(op, "grad", grad, "candidate_grad", candidate_grad)
    _check_no_overlap(op, "x", x, "grad", grad)
    if math.isnan(threshold):
        _fail(f"{op}: threshold must not be NaN")


def check_simplex_points_args(vertices, weights) -> None:
    """The kernels' checks of simplex_points' arguments; RuntimeError (TypeError for a non-tensor)."""
    op = "lst_fast::simplex_points"
    _require_tensors(op, vertices=vertices, weights=weights)
    if vertices.dim() < 2:
        _fail(f"{op}: vertices must have shape (N, K, ...), got {_shape_str(vertices)}")
    if vertices.shape[1] < 1:
        _fail(f"{op}: vertices need at least one vertex (K >= 1), got {_shape_str(vertices)}")
    if vertices.dtype not in _FLOAT_DTYPES:
        _fail(f"{op}: vertices must be float32, float64, float16 or bfloat16, got {_dtype_str(vertices)}")
    if weights.dim() != 2 or weights.shape[1] != vertices.shape[1]:
        _fail(f"{op}: weights must have shape (P, K) with K = vertices.size(1) = {vertices.shape[1]}, got "
              f"{_shape_str(weights)}")
    if weights.dtype not in (torch.float32, torch.float64):
        _fail(f"{op}: weights must be float32 or float64, got {_dtype_str(weights)}")
    if weights.device != vertices.device:
        _fail(f"{op}: weights are on {weights.device} but vertices are on {vertices.device}")


# -- the operators -----------------------------------------------------------------------------------------

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
    step_size, adv_step_size = float(step_size), float(adv_step_size)
    _require_tensors("lst_fast::orthogonal_step", x=x, target=target, grad=grad, adv=adv)
    if _use_native("orthogonal_step", x.device, backend):  # the kernel checks its arguments itself
        return torch.ops.lst_fast.orthogonal_step.default(
            x, target, grad, adv, step_size, adv_step_size, lo, hi
        )
    check_orthogonal_step_args(x, target, grad, adv, step_size, adv_step_size, lo, hi)
    return reference.orthogonal_step(x, target, grad, adv, step_size, adv_step_size, lo, hi)


def confidence_accept(logits: Tensor, label: Tensor, p0: Tensor, threshold: float, x: Tensor, candidate: Tensor,
                      grad: Tensor, candidate_grad: Tensor, confidence: Tensor, *, backend: str = "auto") -> Tensor:
    """Confidence-constrained accept (in place on x, grad, confidence); returns the accepted mask.

    A label outside [0, num_classes) gives that sample a NaN probability: it is not accepted."""
    threshold = float(threshold)
    _require_tensors("lst_fast::confidence_accept", logits=logits, label=label, p0=p0, x=x, candidate=candidate,
                     grad=grad, candidate_grad=candidate_grad, confidence=confidence)
    if _use_native("confidence_accept", x.device, backend):  # the kernel checks its arguments itself
        return torch.ops.lst_fast.confidence_accept.default(
            logits, label, p0, threshold, x, candidate, grad, candidate_grad, confidence
        )
    check_confidence_accept_args(logits, label, p0, threshold, x, candidate, grad, candidate_grad, confidence)
    return reference.confidence_accept(
        logits, label, p0, threshold, x, candidate, grad, candidate_grad, confidence
    )


def simplex_points(vertices: Tensor, weights: Tensor, *, backend: str = "auto") -> Tensor:
    """Convex combinations of per-sample vertices (N, K, *) with weights (P, K): (N * P, *)."""
    _require_tensors("lst_fast::simplex_points", vertices=vertices, weights=weights)
    if _use_native("simplex_points", vertices.device, backend):  # the kernel checks its arguments itself
        return torch.ops.lst_fast.simplex_points.default(vertices, weights)
    check_simplex_points_args(vertices, weights)
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
