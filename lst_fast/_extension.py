"""Loading of the compiled operators and what the package can run natively.

lst_fast._C holds the CPU kernels and the op schemas; lst_fast._C_cuda the CUDA kernels, loaded only when
torch is a CUDA build (so the CPU kernels also load on a CPU-only torch). Both use the LibTorch stable
ABI, built for torch 2.10: one binary serves every torch from 2.10 on.

The package works without them: every operator has a pure-PyTorch implementation (lst_fast.reference).
A module that was built but does not load is never a silent fallback: a UserWarning names the reason and
the fix, once, and backend_info() keeps the details. Set LST_FAST_DISABLE_EXTENSION=1 to force the
fallback on purpose (quietly); a package installed without its extension (LST_FAST_BUILD_EXTENSION=0) is
quiet too.
"""
from __future__ import annotations

import functools
import importlib
import importlib.util
import os
import warnings
from typing import Optional

import torch

OP_NAMES = ("orthogonal_step", "confidence_accept", "simplex_points")
KERNEL_NAMESPACE = "lst_fast_kernels"  # the compiled kernels behind the checked ops of lst_fast.ops
MIN_TORCH = (2, 10)  # the stable-ABI version the binaries are built for (setup.py: TORCH_TARGET_VERSION)


def _torch_version() -> tuple:
    parts = []
    for piece in torch.__version__.split("+")[0].split(".")[:2]:
        digits = "".join(ch for ch in piece if ch.isdigit())
        parts.append(int(digits or 0))
    return tuple(parts)


def _fix_for(error: BaseException) -> str:
    """What to do about a module that was built but does not load."""
    if _torch_version() < MIN_TORCH:
        return (f"lst_fast's compiled kernels need torch >= {MIN_TORCH[0]}.{MIN_TORCH[1]}, found "
                f"{torch.__version__}: upgrade torch (pip install 'torch>={MIN_TORCH[0]}.{MIN_TORCH[1]}')")
    return ("reinstall lst_fast against this torch (pip install --no-build-isolation --force-reinstall "
            "--no-deps lst_fast, or from a source checkout: pip install --no-build-isolation .)")


def _load(module: str) -> Optional[str]:
    """Imports lst_fast.<module>; returns None when it loaded, else why not (warned when it was built)."""
    if importlib.util.find_spec(f"lst_fast.{module}") is None:
        return f"lst_fast.{module} is not built (pure-Python install or source checkout without a build)"
    try:
        importlib.import_module(f"lst_fast.{module}")  # loading registers the kernels with the dispatcher
    except (ImportError, OSError) as error:
        reason = f"{type(error).__name__}: {error}"
        warnings.warn(
            f"lst_fast.{module} was built but does not load ({reason}); lst_fast falls back to its "
            f"pure-PyTorch operators, which are slower. Fix: {_fix_for(error)}. "
            "Set LST_FAST_DISABLE_EXTENSION=1 to use the fallback on purpose without this warning.",
            UserWarning,
            stacklevel=3,
        )
        return reason
    return None


_load_error: Optional[str] = None
_cuda_load_error: Optional[str] = None
if os.environ.get("LST_FAST_DISABLE_EXTENSION", "0") == "1":
    _load_error = _cuda_load_error = "disabled by LST_FAST_DISABLE_EXTENSION=1"
else:
    _load_error = _load("_C")
    if _load_error is not None:
        _cuda_load_error = "lst_fast._C (the op schemas) did not load"
    elif torch.version.cuda is None:
        _cuda_load_error = "torch is a CPU-only build"
    else:
        _cuda_load_error = _load("_C_cuda")


def has_ops() -> bool:
    """True when the compiled kernels are registered (under torch.ops.lst_fast_kernels)."""
    return _load_error is None and all(_has_schema(name) for name in OP_NAMES)


def _has_schema(name: str) -> bool:
    try:
        getattr(getattr(torch.ops, KERNEL_NAMESPACE), name)
    except (AttributeError, RuntimeError):
        return False
    return True


@functools.lru_cache(maxsize=None)  # asked twice per LST iteration; registrations do not change
def has_native_kernel(name: str, device_type: str) -> bool:
    """True when op `name` has a compiled kernel for this device type ("cpu", "cuda")."""
    if _load_error is not None or not _has_schema(name):
        return False
    key = {"cpu": "CPU", "cuda": "CUDA"}.get(device_type)
    return key is not None and torch._C._dispatch_has_kernel_for_dispatch_key(f"{KERNEL_NAMESPACE}::{name}", key)


def assert_has_ops() -> None:
    """Raise a RuntimeError that says how to get the compiled operators."""
    if not has_ops():
        raise RuntimeError(
            "lst_fast's compiled operators are not available "
            f"({_load_error or 'lst_fast._C loaded but registered no ops'}). Install the lst_fast wheel, "
            "or build from source with `pip install --no-build-isolation .` in an environment with torch "
            ">= 2.10 and a C++ compiler (and nvcc for CUDA), or use backend='reference' for the "
            "pure-PyTorch implementation."
        )


def backend_info() -> dict:
    """Which implementation lst_fast uses, per device type, and why.

    Returns a dict with the package and torch versions, whether the extension modules loaded (and the
    error if not), and for "cpu" and "cuda" whether the compiled kernels or the pure-PyTorch fallback run.
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
        "cuda_extension_loaded": _cuda_load_error is None,
        "cuda_extension_error": _cuda_load_error,
        "cpu": kind("cpu"),
        "cuda": kind("cuda"),
        "cuda_available": torch.cuda.is_available(),
        "cpu_bf16_instructions": cpu_has_bf16_instructions(),  # precision="bf16" pays off on the CPU
    }


def backend_line() -> str:
    """One line naming the backend in use, for the first line of the CLI's output."""
    info = backend_info()
    line = f"lst_fast {info['lst_fast']} (torch {info['torch']}): cpu={info['cpu']}"
    if info["torch_cuda"] is not None:
        line += f", cuda={info['cuda']}"
    reasons = [e for e in (info["extension_error"], info["cuda_extension_error"] if info["torch_cuda"] else None) if e]
    if reasons:
        line += f" (pure-PyTorch fallback: {'; '.join(dict.fromkeys(reasons))})"
    return line
