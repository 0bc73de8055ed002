"""The argument contract of lst_fast's three operators: the only place where its rules and messages are written.

Every call of torch.ops.lst_fast.* (and of the typed wrappers in lst_fast.ops) runs these checks before
the compiled kernel or the pure-PyTorch reference, so the same arguments get the same answer on every
backend, with or without the extension: a RuntimeError that names the operator and the argument (a
TypeError for a non-tensor). The compiled kernels (torch.ops.lst_fast_kernels.*, csrc/kernel_guards.h) only
refuse, tersely, what would make them read or write outside their tensors.

The checks read shapes, dtypes, devices and addresses, never tensor values (no host sync on CUDA). One
contract they cannot cover without reading values: a label outside [0, K) in confidence_accept gives a
NaN probability, so that sample is not accepted and x, grad and confidence keep their values for it.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from lst_fast.errors import EnvironmentFault, InputTypeError

FLOAT_DTYPES = (torch.float32, torch.float64, torch.float16, torch.bfloat16)
_DTYPE_NAMES = {  # c10's names of the dtypes, as torch prints them in its own errors
    torch.float32: "Float",
    torch.float64: "Double",
    torch.float16: "Half",
    torch.bfloat16: "BFloat16",
    torch.int64: "Long",
    torch.int32: "Int",
    torch.int16: "Short",
    torch.int8: "Char",
    torch.uint8: "Byte",
    torch.bool: "Bool",
    torch.complex64: "ComplexFloat",
    torch.complex128: "ComplexDouble",
}
_SHARED_MEMORY = (
    "some elements of the input tensor and the written-to tensor refer to a single memory location; clone() one of them"
)


def _fail(message: str) -> None:
    raise EnvironmentFault(message)


def _dtype_str(t: Tensor) -> str:
    return _DTYPE_NAMES.get(t.dtype, str(t.dtype).replace("torch.", ""))


def _shape_str(t: Tensor) -> str:
    return "[" + ", ".join(str(d) for d in t.shape) + "]"


def _num_str(v: float) -> str:
    return f"{v:.9g}"


def require_tensors(op: str, **tensors: object) -> None:
    """TypeError naming the first argument that is not a tensor."""
    for name, t in tensors.items():
        if not isinstance(t, Tensor):
            raise InputTypeError(f"{op}: {name} must be a tensor, got {type(t).__name__}")


def _check_data_tensor(t: Tensor, name: str, ref: Tensor, ref_name: str, op: str) -> None:
    if t.dtype not in FLOAT_DTYPES:
        _fail(f"{op}: {name} must be float32, float64, float16 or bfloat16, got {_dtype_str(t)}")
    if t.device != ref.device:
        _fail(f"{op}: {name} is on {t.device} but {ref_name} is on {ref.device}; all tensors must be on one device")
    if t.dtype != ref.dtype:
        _fail(f"{op}: {name} has dtype {_dtype_str(t)} but {ref_name} has dtype {_dtype_str(ref)}")
    if t.shape != ref.shape:
        _fail(f"{op}: {name} has shape {_shape_str(t)} but {ref_name} has shape {_shape_str(ref)}")


def _non_overlapping_and_dense(t: Tensor) -> bool:
    """The elements fill one block of numel() slots, in some order of the dimensions."""
    if t.is_contiguous():
        return True
    dims = sorted((stride, size) for size, stride in zip(t.shape, t.stride(), strict=True) if size >= 2)
    expected = 1
    for stride, size in dims:
        if stride != expected:
            return False
        expected *= size
    return True


def _check_no_internal_overlap(op: str, name: str, t: Tensor) -> None:
    """A written tensor with a dimension of stride 0 (an expanded one) writes one element twice."""
    if any(stride == 0 and size > 1 for size, stride in zip(t.shape, t.stride(), strict=True)):
        _fail(
            f"{op}: {name} has internal overlap (more than one element refers to a single memory location); "
            f"pass a tensor that owns its memory, e.g. {name}.clone()"
        )


def _check_no_overlap(op: str, written: str, a: Tensor, other: str, b: Tensor, addresses: bool) -> None:
    """A written tensor that shares memory with another argument (the same tensor, or a view of it)."""
    if a is b:
        _fail(f"{op}: {written} and {other} are the same tensor: {_SHARED_MEMORY}")
    if not addresses or a.numel() == 0 or b.numel() == 0 or a.device.type == "meta" or torch.compiler.is_compiling():
        return  # nothing to compare, or no memory (meta and fake tensors)
    if not (_non_overlapping_and_dense(a) and _non_overlapping_and_dense(b)):
        return  # gaps between the elements: too hard to tell (the kernels then work on contiguous copies)
    a_begin, b_begin = a.data_ptr(), b.data_ptr()
    a_end, b_end = a_begin + a.numel() * a.element_size(), b_begin + b.numel() * b.element_size()
    if a_begin < b_end and b_begin < a_end:
        _fail(f"{op}: {written} and {other} overlap in memory: {_SHARED_MEMORY}")


# The checks take an op's arguments as the caller gave them, in the schema's order (lst_fast.ops.SCHEMAS), without
# annotations: telling a tensor from anything else is their job.


def check_orthogonal_step(x, target, grad, adv, step_size, adv_step_size, lo, hi, addresses: bool = True) -> None:
    """orthogonal_step's arguments; `addresses=False` skips the memory comparisons (fake tensors)."""
    op = "lst_fast::orthogonal_step"
    require_tensors(op, x=x, target=target, grad=grad, adv=adv)
    if x.dim() < 1:
        _fail(f"{op}: x must have a batch dimension, got shape {_shape_str(x)}")
    for name, t in (("x", x), ("target", target), ("grad", grad), ("adv", adv)):
        _check_data_tensor(t, name, x, "x", op)
    _check_no_internal_overlap(op, "adv", adv)
    for name, t in (("x", x), ("target", target), ("grad", grad)):
        _check_no_overlap(op, "adv", adv, name, t, addresses)
    if not math.isfinite(step_size):
        _fail(f"{op}: step_size must be finite, got {_num_str(step_size)}")
    if not (math.isfinite(adv_step_size) and adv_step_size >= 0):
        _fail(f"{op}: adv_step_size must be finite and >= 0, got {_num_str(adv_step_size)}")
    if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
        _fail(f"{op}: bounds must be finite with lo < hi, got lo={_num_str(lo)} hi={_num_str(hi)}")


def check_confidence_accept(
    logits, label, p0, threshold, x, candidate, grad, candidate_grad, confidence, addresses: bool = True
) -> None:
    """confidence_accept's arguments; `addresses=False` skips the memory comparisons (fake tensors)."""
    op = "lst_fast::confidence_accept"
    require_tensors(
        op,
        logits=logits,
        label=label,
        p0=p0,
        x=x,
        candidate=candidate,
        grad=grad,
        candidate_grad=candidate_grad,
        confidence=confidence,
    )
    if x.dim() < 1:
        _fail(f"{op}: x must have a batch dimension, got shape {_shape_str(x)}")
    n = x.shape[0]
    for name, t in (("x", x), ("candidate", candidate), ("grad", grad), ("candidate_grad", candidate_grad)):
        _check_data_tensor(t, name, x, "x", op)
    if logits.dim() != 2 or logits.shape[0] != n:
        _fail(f"{op}: logits must have shape ({n}, num_classes), got {_shape_str(logits)}")
    if logits.shape[1] < 1:
        _fail(f"{op}: logits must have at least one class, got {_shape_str(logits)}")
    if logits.dtype not in FLOAT_DTYPES:
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
        _fail(
            f"{op}: confidence must match p0 (shape {_shape_str(p0)}, dtype {_dtype_str(p0)}), got shape "
            f"{_shape_str(confidence)} dtype {_dtype_str(confidence)}"
        )
    for name, t in (("logits", logits), ("label", label), ("p0", p0), ("confidence", confidence)):
        if t.device != x.device:
            _fail(f"{op}: {name} is on {t.device} but x is on {x.device}; all tensors must be on one device")
    _check_no_internal_overlap(op, "x", x)
    _check_no_internal_overlap(op, "grad", grad)
    _check_no_internal_overlap(op, "confidence", confidence)
    _check_no_overlap(op, "x", x, "candidate", candidate, addresses)
    _check_no_overlap(op, "grad", grad, "candidate_grad", candidate_grad, addresses)
    _check_no_overlap(op, "x", x, "grad", grad, addresses)
    # The CUDA kernel's blocks re-read p0[row] and the logits while one of them writes confidence[row].
    _check_no_overlap(op, "confidence", confidence, "p0", p0, addresses)
    _check_no_overlap(op, "confidence", confidence, "logits", logits, addresses)
    if math.isnan(threshold):
        _fail(f"{op}: threshold must not be NaN")


def check_simplex_points(vertices: Tensor, weights: Tensor) -> None:
    """simplex_points' arguments (it writes no argument: nothing to compare in memory)."""
    op = "lst_fast::simplex_points"
    require_tensors(op, vertices=vertices, weights=weights)
    if vertices.dim() < 2:
        _fail(f"{op}: vertices must have shape (N, K, ...), got {_shape_str(vertices)}")
    if vertices.shape[1] < 1:
        _fail(f"{op}: vertices need at least one vertex (K >= 1), got {_shape_str(vertices)}")
    if vertices.dtype not in FLOAT_DTYPES:
        _fail(f"{op}: vertices must be float32, float64, float16 or bfloat16, got {_dtype_str(vertices)}")
    if weights.dim() != 2 or weights.shape[1] != vertices.shape[1]:
        _fail(
            f"{op}: weights must have shape (P, K) with K = vertices.size(1) = {vertices.shape[1]}, got "
            f"{_shape_str(weights)}"
        )
    if weights.dtype not in (torch.float32, torch.float64):
        _fail(f"{op}: weights must be float32 or float64, got {_dtype_str(weights)}")
    if weights.device != vertices.device:
        _fail(f"{op}: weights are on {weights.device} but vertices are on {vertices.device}")
