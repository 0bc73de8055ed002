"""A size checked against this machine's memory before the work that needs it: a flag whose memory grows
with its value (--resamples, --simplex-points) is refused in one line naming the size and the flag, not
found out by an allocation that fails after the long work."""

from __future__ import annotations

from typing import Optional

from lst_fast.errors import EnvironmentFault

__all__ = ["gib", "require_memory"]


def gib(size: float) -> str:
    """A byte count as GiB for a message ("12.3 GiB")."""
    return f"{size / 2**30:,.1f} GiB"


def require_memory(needed: float, what: str, fix: str, available: Optional[int] = None) -> None:
    """EnvironmentFault when `needed` bytes (an estimate of what `what` holds at once) exceed the memory
    this process has available (Linux MemAvailable; nothing is checked where it is unknown). `fix` says
    which flag to lower."""
    from lst_fast.walk.batching import available_memory

    available = available_memory() if available is None else available
    if available is not None and needed > available:
        raise EnvironmentFault(
            f"{what} needs about {gib(needed)} of memory and this machine has {gib(available)} available; {fix}"
        )
