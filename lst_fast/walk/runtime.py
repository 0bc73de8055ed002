"""What the model runs under, shared by the traversal and the geometry: eval mode, the backend flags of each
precision, the input's CUDA device, and the model call with the per-channel normalization in front."""

from __future__ import annotations

import contextlib
from typing import Any, Callable, Iterator, List, Optional, Tuple

import torch
from torch import Tensor

Normalization = Optional[Tuple[Tensor, Tensor]]  # (mean, std) as (1, C, 1, 1) tensors; None: none


@contextlib.contextmanager
def eval_mode(model: torch.nn.Module) -> Iterator[None]:
    """Put every submodule in eval mode and restore each one's own flag afterwards."""
    flags = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield
    finally:
        for module, training in flags:
            module.training = training


@contextlib.contextmanager
def cudnn_autotune(enabled: bool = True) -> Iterator[None]:
    """bf16 mode: let cuDNN time its algorithms once per shape (LST repeats one shape hundreds of times);
    exact mode leaves this off, since the choice may differ between runs. `enabled=False` turns it off
    inside (calls on shapes that will not repeat)."""
    saved = torch.backends.cudnn.benchmark
    torch.backends.cudnn.benchmark = enabled
    try:
        yield
    finally:
        torch.backends.cudnn.benchmark = saved


def _tf32_switches(backends: Any) -> List[Tuple[Any, str, Any]]:
    """(owner, attribute, the value meaning full fp32) for every switch that lets fp32 math run reduced.

    Where torch has the per-operation precision settings (`fp32_precision`, through which a user's global
    `torch.backends.fp32_precision = "tf32"` is inherited), those are used; the legacy `allow_tf32` flags
    (which torch refuses to read once a new-style setting was made) only where a backend lacks them."""
    switches: List[Tuple[Any, str, Any]] = []
    matmul = backends.cuda.matmul
    switches.append(
        (matmul, "fp32_precision", "ieee") if hasattr(matmul, "fp32_precision") else (matmul, "allow_tf32", False)
    )
    cudnn = [getattr(backends.cudnn, op, None) for op in ("conv", "rnn")]
    if all(hasattr(setting, "fp32_precision") for setting in cudnn):
        switches += [(setting, "fp32_precision", "ieee") for setting in cudnn]
    else:
        switches.append((backends.cudnn, "allow_tf32", False))
    mkldnn = getattr(backends, "mkldnn", None)  # the CPU's oneDNN: new-style settings only
    for op in ("matmul", "conv", "rnn"):
        setting = getattr(mkldnn, op, None)
        if hasattr(setting, "fp32_precision"):
            switches.append((setting, "fp32_precision", "ieee"))
    return switches


@contextlib.contextmanager
def full_fp32_matmuls(backends: Any = None) -> Iterator[None]:
    """No TF32 (or other reduced precision) in convolutions and matrix products inside: exact mode, and the
    BatchNorm-folding check. Afterwards every switch holds the value read before (as torch's own
    `flags()` contexts restore them)."""
    switches = _tf32_switches(torch.backends if backends is None else backends)
    saved = [getattr(owner, name) for owner, name, _ in switches]
    try:
        for owner, name, full in switches:
            setattr(owner, name, full)
        yield
    finally:
        for (owner, name, _), value in zip(switches, saved, strict=True):
            setattr(owner, name, value)


def precision_flags(precision: str) -> "contextlib.AbstractContextManager[None]":
    """The backend flags of a precision: fp32 (exact) turns TF32 off, bf16 turns cuDNN autotuning on."""
    return full_fp32_matmuls() if precision == "fp32" else cudnn_autotune()


def on_device(device: torch.device) -> "contextlib.AbstractContextManager[Any]":
    """Make `device` the current CUDA device inside (streams, graph captures and the model's kernels
    then all belong to the input's device); nothing on other devices."""
    return torch.cuda.device(device) if device.type == "cuda" else contextlib.nullcontext()


@contextlib.contextmanager
def running(model: torch.nn.Module, precision: str, device: torch.device) -> Iterator[None]:
    """Everything a model call of lst_fast runs under: eval mode, the precision's flags, the input's device."""
    with eval_mode(model), precision_flags(precision), on_device(device):
        yield


def normalize(images: Tensor, norm: Normalization) -> Tensor:
    return images if norm is None else (images - norm[0]) / norm[1]


def normalized(model: Callable[[Tensor], Tensor], norm: Normalization) -> Callable[[Tensor], Tensor]:
    """images in [lo, hi] -> logits: `model` with the normalization applied first."""
    if norm is None:
        return model

    def forward(images: Tensor) -> Tensor:
        return model(normalize(images, norm))

    return forward
