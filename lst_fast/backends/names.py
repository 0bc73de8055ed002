"""The operators' backends by name: which implementation of `torch.ops.lst_fast.*` runs (LSTSettings.backend
and the ops' `backend=` argument both take one)."""

from __future__ import annotations

from lst_fast.errors import InputError

BACKENDS = ("auto", "native", "reference")


def check_backend(backend: str) -> None:
    """backend is one of BACKENDS (auto: compiled kernels where available; native: require them; reference:
    pure PyTorch)."""
    if backend not in BACKENDS:
        raise InputError(f"backend must be one of {BACKENDS}, got {backend!r}")
