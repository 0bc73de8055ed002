"""Facts about the machine that decide what pays off here (read by backend_info and the bf16 preparation)."""

from __future__ import annotations

import functools
from typing import Optional

__all__ = ["cpu_has_bf16_instructions"]


@functools.lru_cache(maxsize=None)
def cpu_has_bf16_instructions() -> Optional[bool]:
    """True when this CPU does bf16 arithmetic in hardware (x86 AVX512-BF16 or AMX, Arm BF16), False
    when it does not (oneDNN then emulates bf16, often slower than fp32), None when unknown."""
    try:
        with open("/proc/cpuinfo") as f:
            flags = set(f.read().split())
    except OSError:
        return None
    return bool(flags & {"avx512_bf16", "amx_bf16", "bf16"})
