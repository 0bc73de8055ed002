"""What `lst-fast` does with an exception, decided by its type alone: an error in what it was given or
where it runs gets one line and exit code 1; an unexpected one (most likely a bug in lst_fast) gets one line
naming the file that holds its traceback, and exit code 2 (as pip does).

Expected (`is_expected`), exit code 1:
- lst_fast's own errors (lst_fast.errors.LstFastError: InputError, DataError, EnvironmentFault, ...), which
  its checks of the arguments, the files and the environment raise, each naming what was wrong;
- an OSError from anywhere: a missing or unreadable file, a permission, a full disk, the network;
- a ModuleNotFoundError for a package outside lst_fast: an optional dependency that is not installed;
- torch.OutOfMemoryError: the device is too small for the batch;
- out of CPU memory (a MemoryError, or torch's "can't allocate memory"): named with the size that did
  not fit (`out_of_memory_text`). The flags that size the work are bounded and checked against the
  machine before it starts (lst_fast.evaluation.limits, lst_fast.evaluation.memory_check); this is what is left.

An unexpected error raised in the user's own code (a `py:MODULE:FUNCTION` factory: its import, the
factory, the model's forward; decided by the frames of its traceback, lst_fast.models.user_code) is the
user's, exit code 1: one line naming the model spec and the error, its traceback in a file
(`report_user_error`).

Anything else is unexpected, exit code 2: other exception types (KeyError, IndexError, AssertionError, ...)
and the standard ValueError, TypeError and RuntimeError, which only torch, another library or the model
raise (lst_fast raises its own types).
"""

from __future__ import annotations

import os
import platform
import re
import sys
import tempfile
import traceback
from pathlib import Path
from typing import Callable, Optional, Sequence

from lst_fast.errors import LstFastError

__all__ = ["is_expected", "out_of_memory_text", "report_unexpected", "report_user_error", "write_traceback"]

_CPU_ALLOCATION = re.compile(r"can't allocate memory: you tried to allocate (\d+) bytes")


def is_expected(error: BaseException) -> bool:
    """True when `error` reports a problem with the input or the environment (see the module docstring),
    False when it is unexpected: most likely a bug in lst_fast."""
    if isinstance(error, (LstFastError, OSError)) or out_of_memory_text(error) is not None:
        return True
    if isinstance(error, ModuleNotFoundError) and not (error.name or "").startswith("lst_fast"):
        return True
    import torch

    return isinstance(error, torch.OutOfMemoryError)


def out_of_memory_text(error: BaseException) -> Optional[str]:
    """The one line for an error that ran out of CPU memory, with the size that did not fit; None for any
    other error."""
    found = _CPU_ALLOCATION.search(str(error)) if isinstance(error, RuntimeError) else None
    if found is None and not isinstance(error, MemoryError):
        return None
    size = f" {int(found.group(1)):,} bytes ({int(found.group(1)) / 2**30:,.1f} GiB)" if found else ""
    return (
        f"out of memory: could not allocate{size or ' what was asked'}; lower the flag that sizes the work "
        "(--num-samples, --chunk-size, --batch-size, --simplex-points, --resamples)"
    )


def write_traceback(error: BaseException, argv: Sequence[str]) -> Optional[Path]:
    """Write the command, the versions and the full traceback of `error` to a new file in the temporary
    folder; return its path (None when it cannot be written)."""
    from lst_fast.version import __version__

    try:
        import torch

        torch_version = torch.__version__
    except Exception:  # noqa: BLE001  the report must not fail on what it reports
        torch_version = "unknown"
    lines = [
        "lst-fast " + " ".join(argv),
        f"lst_fast {__version__}, torch {torch_version}, Python {platform.python_version()}, {platform.platform()}",
        "",
        *traceback.format_exception(type(error), error, error.__traceback__),
    ]
    try:
        fd, name = tempfile.mkstemp(prefix="lst-fast-error-", suffix=".txt")
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write("\n".join(line.rstrip("\n") for line in lines) + "\n")
    except OSError:
        return None
    return Path(name)


def report_unexpected(command: str, error: BaseException, argv: Sequence[str]) -> None:
    """One line on stderr: the error, that it is most likely a bug, and where its traceback is (on stderr
    itself when no file can be written)."""
    from lst_fast.errors import one_line

    _line_and_traceback(
        error,
        argv,
        lambda where: (
            f"lst-fast {command}: internal error: {one_line(error)} "
            f"(most likely a bug in lst_fast; {where}: please include it in a bug report)"
        ),
    )


def report_user_error(command: str, error: BaseException, argv: Sequence[str]) -> bool:
    """When `error` was raised in the user's own code (lst_fast.models.user_code.blame): one line on stderr
    naming the model spec, the error and where its traceback is, and True; else False (nothing printed)."""
    from lst_fast.errors import one_line
    from lst_fast.models.user_code import blame

    found = blame(error)
    if found is None:
        return False
    spec, frame = found
    _line_and_traceback(
        error,
        argv,
        lambda where: (
            f"lst-fast {command}: error: the model {spec} raised {one_line(error)} in its own code "
            f"({Path(frame.filename).name}, line {frame.lineno}, in {frame.name}; {where})"
        ),
    )
    return True


def _line_and_traceback(error: BaseException, argv: Sequence[str], line: Callable[[str], str]) -> None:
    """The traceback into a file (write_traceback), then line(where it is) on stderr; the traceback itself
    on stderr when no file can be written."""
    path = write_traceback(error, argv)
    print(line(f"the traceback is in {path}" if path else "the traceback follows"), file=sys.stderr)
    if path is None:
        traceback.print_exception(type(error), error, error.__traceback__, file=sys.stderr)
