"""Loading of the compiled operators (lst_fast._C) and what the package can run natively.

The package works without the extension: every operator has a pure-PyTorch implementation
(lst_fast.reference). Set LST_FAST_DISABLE_EXTENSION=1 to force that path.
"""
from __future__ import annotations

import functools
import os
from typing import Optional

import torch

OP_NAMES = ("orthogonal_step", "confidence_accept", "simplex_points")

_load_error: Optional[str] = None
if os.environ.get("LST_FAST_DISABLE_EXTENSION", "0") == "1":
    _load_error = "disabled by LST_FAST_DISABLE_EXTENSION=1"
else:
    try:
        from lst_fast import _C  # noqa: F401  (loading registers the ops with the dispatcher)
    except ImportError as error:  # not built, or built against another torch
        _load_error = f"{type(error).__name__}: {error}"


def has_ops() -> bool:
    """True when the compiled operators are registered under torch.ops.lst_fast."""
    return _load_error is None and all(_has_schema(name) for name in OP_NAMES)


def _has_schema(name: str) -> bool:
    try:
        getattr(torch.ops.lst_fast, name)
    except (AttributeError, RuntimeError):
        return False
    return True


@functools.lru_cache(maxsize=None)  # asked twice per LST iteration; registrations do not change
def has_native_kernel(name: str, device_type: str) -> bool:
    """True when op `name` has a compiled kernel for this device type ("cpu", "cuda")."""
    if _load_error is not None or not _has_schema(name):
        return False
    key = {"cpu": "CPU", "cuda": "CUDA"}.get(device_type)
    return key is not None and torch._C._dispatch_has_kernel_for_dispatch_key(f"lst_fast::{name}", key)


def assert_has_ops() -> None:
    """Raise a RuntimeError that says how to get the compiled operators."""
    if not has_ops():
        raise RuntimeError(
            "lst_fast's compiled operators are not available "
            f"({_load_error or 'lst_fast._C loaded but registered no ops'}). Reinstall with "
            "`pip install --no-build-isolation .` in an environment with a C++ compiler (and nvcc for "
            "CUDA), or use backend='reference' for the pure-PyTorch implementation."
        )


def backend_info() -> dict:
    """Which implementation lst_fast uses, per device type, and why.

    Returns a dict with the package and torch versions, whether the extension loaded (and the error if
    not), and for "cpu" and "cuda" whether the compiled kernels or the pure-PyTorch fallback run.
    """
    from lst_fast.prepared_model import cpu_has_bf16_instructions
    from lst_fast.version import __version__

    def kind(device_type: str) -> str:
        return "native" if all(has_native_kernel(n, device_type) for n in OP_NAMES) else "reference"

    return {
        "lst_fast": __version__,
        "torch": torch.__version__,
        "torch_cuda": torch.version.cuda,
        "extension_loaded": _load_error is None,
        "extension_error": _load_error,
        "cpu": kind("cpu"),
        "cuda": kind("cuda"),
        "cuda_available": torch.cuda.is_available(),
        "cpu_bf16_instructions": cpu_has_bf16_instructions(),  # precision="bf16" pays off on the CPU
    }
