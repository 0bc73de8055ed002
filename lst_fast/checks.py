"""The one count check of lst_fast: a value that must be an integer in a range (an iteration count, a seed,
a batch size, a row's number of sources). Python counts True as the integer 1, so a bool is refused by name.

Every layer uses it (walk/, evaluation/, data/, website/ and the geometry), so it imports nothing of
lst_fast's but its error types. The failure is one InputError that names the argument and the range
expected, e.g. "seed must be an integer in [0, 4,294,967,295], got -1".
"""

from __future__ import annotations

import numbers
from typing import Any, Optional

from lst_fast.errors import InputError

__all__ = ["check_count", "check_optional_count", "count_range", "is_count"]


def count_range(minimum: int, maximum: Optional[int] = None) -> str:
    """What a count in [minimum, maximum] is, in words: "an integer >= 1" or "an integer in [0, 12]"."""
    if maximum is None:
        return f"an integer >= {minimum:,}"
    return f"an integer in [{minimum:,}, {maximum:,}]"


def is_count(value: Any, minimum: int = 0, maximum: Optional[int] = None) -> bool:
    """True for an integer (not a bool) in [minimum, maximum] (maximum None: no upper bound)."""
    if not isinstance(value, numbers.Integral) or isinstance(value, bool):
        return False
    return minimum <= value and (maximum is None or value <= maximum)


def check_count(name: str, value: Any, minimum: int = 0, maximum: Optional[int] = None) -> int:
    """`value` as an int when it is an integer (not a bool) in [minimum, maximum]; else an InputError naming
    `name` and the range."""
    if not is_count(value, minimum, maximum):
        raise InputError(f"{name} must be {count_range(minimum, maximum)}, got {value!r}")
    return int(value)


def check_optional_count(
    name: str, value: Any, minimum: int = 0, maximum: Optional[int] = None, *, none_means: str
) -> Optional[int]:
    """None, or check_count's int; the message also says what None means (e.g. "automatic")."""
    if value is None:
        return None
    if not is_count(value, minimum, maximum):
        raise InputError(f"{name} must be {count_range(minimum, maximum)} or None ({none_means}), got {value!r}")
    return int(value)
