"""Loading of the compiled operators and what the package can run natively.

lst_fast._C holds the CPU kernels and the kernel schemas (lst_fast_kernels::*; the public ops' schemas are
lst_fast.ops'); lst_fast._C_cuda<N> the CUDA kernels built with
CUDA major version N, loaded only when torch is a CUDA build of that major version (so the CPU kernels
also load on a CPU-only torch, which loads no CUDA module). All use the LibTorch stable ABI, built for
torch 2.10: one binary serves every torch from 2.10 on. Beside each CUDA module, lst_fast/<module>.json
(written by setup.py) names the CUDA version it was built with and the architectures it carries.

Loading a CUDA module does not prove its kernels run here: the driver may be older than its CUDA
version, or the GPU may be one it carries no code for. lst_fast.backends.cuda_compat checks both on the first
use of each GPU and, when either does not fit, sends that GPU's tensors to the pure-PyTorch operators
with one warning.

The package works without them: every operator has a pure-PyTorch implementation (lst_fast.backends.reference).
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
from typing import Optional

import torch

from lst_fast.caller_warning import warn_at_caller

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
        return (
            f"lst_fast's compiled kernels need torch >= {MIN_TORCH[0]}.{MIN_TORCH[1]}, found "
            f"{torch.__version__}: upgrade torch (pip install 'torch>={MIN_TORCH[0]}.{MIN_TORCH[1]}')"
        )
    return (
        "reinstall lst_fast against this torch (pip install --no-build-isolation --force-reinstall "
        "--no-deps lst_fast, or from a source checkout: pip install --no-build-isolation .)"
    )


def _load(module: str) -> Optional[str]:
    """Imports lst_fast.<module>; returns None when it loaded, else why not (warned when it was built)."""
    if importlib.util.find_spec(f"lst_fast.{module}") is None:
        return f"lst_fast.{module} is not built (pure-Python install or source checkout without a build)"
    try:
        importlib.import_module(f"lst_fast.{module}")  # loading registers the kernels with the dispatcher
    except (ImportError, OSError) as error:
        reason = f"{type(error).__name__}: {error}"
        warn_at_caller(
            f"lst_fast.{module} was built but does not load ({reason}); lst_fast falls back to its "
            f"pure-PyTorch operators, which are slower. Fix: {_fix_for(error)}. "
            "Set LST_FAST_DISABLE_EXTENSION=1 to use the fallback on purpose without this warning.",
            UserWarning,
        )
        return reason
    return None


def choose_cuda_module(torch_cuda: Optional[str], available: list) -> Optional[str]:
    """The CUDA module for a torch built with CUDA `torch_cuda`, among the module names `available`.

    _C_cuda<major of torch's CUDA> when present; else the newest other one (its CUDA runtime is linked
    statically, so it loads beside any torch, and the first-use check tells whether the driver runs it);
    else that first name, so the error names the missing module. None on a CPU-only torch.
    """
    if torch_cuda is None:
        return None
    wanted = f"_C_cuda{torch_cuda.split('.')[0]}"
    if wanted in available or not available:
        return wanted
    return max(available, key=lambda name: int(name[len("_C_cuda") :]))


def _available_cuda_modules() -> list:
    folder = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # the compiled modules sit in lst_fast/
    names = {entry.split(".")[0] for entry in os.listdir(folder) if entry.startswith("_C_cuda") and ".so" in entry}
    return sorted(name for name in names if name[len("_C_cuda") :].isdigit())


@functools.lru_cache(maxsize=None)
def cuda_module_name() -> Optional[str]:
    """The CUDA module lst_fast loads beside this torch (choose_cuda_module); None on a CPU-only torch.
    Decided once (the operators ask on every CUDA call)."""
    return choose_cuda_module(torch.version.cuda, _available_cuda_modules())


_load_error: Optional[str] = None
_cuda_load_error: Optional[str] = None
if os.environ.get("LST_FAST_DISABLE_EXTENSION", "0") == "1":
    _load_error = _cuda_load_error = "disabled by LST_FAST_DISABLE_EXTENSION=1"
else:
    _load_error = _load("_C")
    if _load_error is not None:
        _cuda_load_error = "lst_fast._C (the kernel schemas) did not load"
    elif torch.version.cuda is None:
        _cuda_load_error = "torch is a CPU-only build"
    else:
        _cuda_load_error = _load(cuda_module_name())


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


def backend_info() -> dict:
    """Which implementation lst_fast uses, per device type, and why.

    Returns:
        A dict with the package and torch versions, whether the extension modules loaded (and the error
        if not), for "cpu" and "cuda" whether the compiled kernels or the pure-PyTorch fallback run, the
        CUDA checks made so far, and whether this CPU has bf16 instructions (`cpu_bf16_instructions`).
    """
    from lst_fast.backends.machine import cpu_has_bf16_instructions
    from lst_fast.version import __version__

    def kind(device_type: str) -> str:
        return "native" if all(has_native_kernel(n, device_type) for n in OP_NAMES) else "reference"

    from lst_fast.backends.cuda_compat import cuda_build, cuda_checks

    build = cuda_build(cuda_module_name()) if _cuda_load_error is None else None
    return {
        "lst_fast": __version__,
        "torch": torch.__version__,
        "torch_cuda": torch.version.cuda,
        "extension_loaded": _load_error is None,
        "extension_error": _load_error,
        "cuda_extension_loaded": _cuda_load_error is None,
        "cuda_extension_error": _cuda_load_error,
        # The CUDA module torch's CUDA major version selects, the CUDA version it was built with, and the
        # architectures it carries as machine code (cubins) and as PTX (compiled by the driver for newer GPUs).
        "cuda_module": f"lst_fast.{cuda_module_name()}" if cuda_module_name() else None,
        "cuda_module_cuda": build.cuda if build else None,
        "cuda_module_arches": [f"sm_{a.replace('.', '')}" for a in build.arches] if build else [],
        "cuda_module_ptx": [f"compute_{a.replace('.', '')}" for a in build.ptx] if build else [],
        # Per GPU checked so far (on its first use): None when the compiled kernels run on it, else why not.
        "cuda_device_checks": cuda_checks(),
        "cpu": kind("cpu"),
        "cuda": kind("cuda"),
        "cuda_available": torch.cuda.is_available(),
        "cpu_bf16_instructions": cpu_has_bf16_instructions(),  # precision="bf16" pays off on the CPU
    }
