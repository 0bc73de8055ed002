"""Facts about the machine that decide what pays off here (read by backend_info and the bf16 preparation)."""

from __future__ import annotations

import functools
from typing import Optional

__all__ = ["BF16_EMULATED_WARNING", "cpu_has_bf16_instructions"]

# What precision="bf16" costs where cpu_has_bf16_instructions() is False. Measured with `lst-fast bench`
# on a 2-core AMD EPYC with AVX2 only: bf16 ran at 0.18x the paper loop, exact fp32 at 1.67x.
BF16_EMULATED_WARNING = (
    "precision='bf16' on a CPU without bf16 instructions (no AVX512-BF16 or AMX): bf16 is emulated there, "
    "about 9x slower than precision='fp32' (measured on an AMD EPYC with AVX2 only); use precision='fp32'"
)


@functools.lru_cache(maxsize=None)
def cpu_has_bf16_instructions() -> Optional[bool]:
    """True when this CPU does bf16 arithmetic in hardware (x86 AVX512-BF16 or AMX, Arm BF16), False
    when it does not (oneDNN then emulates bf16: BF16_EMULATED_WARNING), None when unknown."""
    try:
        with open("/proc/cpuinfo") as f:
            flags = set(f.read().split())
    except OSError:
        return None
    return bool(flags & {"avx512_bf16", "amx_bf16", "bf16"})
