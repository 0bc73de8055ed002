"""Warnings attributed to the caller's line: the first frame outside lst_fast, wherever in lst_fast the warning
is raised, so a filter or a report names the user's file (not `lst_fast/walk/traversal.py`) whatever the depth."""

from __future__ import annotations

import os
import sys
import warnings
from types import FrameType
from typing import Optional, Type

__all__ = ["warn_at_caller"]

_PACKAGE = os.path.dirname(os.path.realpath(__file__)) + os.sep
# torch's decorator wrappers (`@torch.no_grad()` on an lst_fast function) sit between two lst_fast frames
_WRAPPERS = (os.sep + os.path.join("torch", "utils", "_contextlib.py"),)


def _inside(frame: FrameType) -> bool:
    name = frame.f_code.co_filename
    return os.path.realpath(name).startswith(_PACKAGE) or name.endswith(_WRAPPERS)


def _import_machinery(frame: FrameType) -> bool:
    """The frames `warnings` itself skips when it counts a stack level (the import system's own)."""
    name = frame.f_code.co_filename
    return "importlib" in name and "_bootstrap" in name


def _next_counted(frame: FrameType) -> Optional[FrameType]:
    back = frame.f_back
    while back is not None and _import_machinery(back):
        back = back.f_back
    return back


def warn_at_caller(message: str, category: Type[Warning] = UserWarning) -> None:
    """`warnings.warn(message, category)` at the first frame outside lst_fast (the outermost frame when the
    whole stack is lst_fast's). The level is counted as `warnings` counts it, over the same frames."""
    frame: Optional[FrameType] = sys._getframe(1)  # the lst_fast function that warns: stack level 2
    level = 2
    while frame is not None and _inside(frame):
        outer = _next_counted(frame)
        if outer is None:
            break
        frame, level = outer, level + 1
    warnings.warn(message, category, stacklevel=level)
