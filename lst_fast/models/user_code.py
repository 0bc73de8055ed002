"""Whose code raised an error: the user's own (a `py:MODULE:FUNCTION` factory, its module or the model's
forward it defines) or lst_fast's. `lst-fast` reports an unexpected error in the user's code as an error
of the input (exit code 1, naming the model spec), and any other as a bug in lst_fast (exit code 2).

The user's code is the source of the factory's module, recorded when lst_fast.models.factory imports it:
the .py file given by path, or for a module given by name its top-level package's folder (a single-file
module: its file). lst_fast's own folder and torch's are never the user's, whatever the spec names.

`blame(error)` walks the error's traceback from the frame that raised it outward and skips the frames of
other code (torch, the standard library, a helper module of the user's): the first frame that is either
lst_fast's or the user's decides. So an error in the user's forward, raised inside a torch layer it calls,
is the user's; an error in lst_fast's code, even one called from the user's forward, is lst_fast's.
"""

from __future__ import annotations

import importlib.util
import os
import traceback
from pathlib import Path
from types import TracebackType
from typing import Dict, Optional, Tuple

__all__ = ["blame", "record_user_code", "record_user_module"]

# The source of each factory module imported in this process: a resolved file or folder -> the model spec.
_SOURCES: Dict[str, str] = {}
_NEVER_THE_USERS = tuple(str(Path(p).resolve()) for p in (Path(__file__).parent.parent,))


def _never_the_users() -> Tuple[str, ...]:
    """lst_fast's folder, and torch's (a factory named by a module of torch does not make torch the user's)."""
    import torch

    return _NEVER_THE_USERS + (str(Path(torch.__file__).resolve().parent),)


def _inside(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)


def record_user_code(spec: str, source: Path) -> None:
    """Record `source` (a file or folder) as the user's code of the model `spec`, unless it holds or lies in
    lst_fast's or torch's folder."""
    where = str(Path(source).resolve())
    if any(_inside(where, root) or _inside(root, where) for root in _never_the_users()):
        return
    _SOURCES[where] = spec


def record_user_module(spec: str, module: str) -> None:
    """Record the source of the module `module` (a dotted name, not imported yet) as the user's code: its
    top-level package's folder, or a single-file module's file. Found without importing anything (a
    top-level name needs no parent package); nothing is recorded when it cannot be found."""
    try:
        found = importlib.util.find_spec(module.partition(".")[0])
    except (ImportError, ValueError):
        return
    if found is None:
        return
    if found.submodule_search_locations:
        for folder in found.submodule_search_locations:
            record_user_code(spec, Path(folder))
    elif found.origin and os.path.isfile(found.origin):
        record_user_code(spec, Path(found.origin))


def _owner(filename: str) -> Tuple[bool, Optional[str]]:
    """(decides, spec): whether a frame in `filename` is lst_fast's or the user's, and the spec when the user's."""
    if filename.startswith("<"):  # "<frozen importlib._bootstrap>", "<string>": no file of anyone's
        return False, None
    try:
        where = str(Path(filename).resolve())
    except (OSError, RuntimeError):
        return False, None
    if _inside(where, _NEVER_THE_USERS[0]):
        return True, None
    for root, spec in _SOURCES.items():
        if _inside(where, root):
            return True, spec
    return False, None


def blame(error: BaseException) -> Optional[Tuple[str, traceback.FrameSummary]]:
    """(model spec, the frame of the user's code) when `error` was raised in the user's code (see the module
    docstring); None when it is lst_fast's or no user code is recorded."""
    if not _SOURCES:
        return None
    frames = []
    tb: Optional[TracebackType] = error.__traceback__
    while tb is not None:
        frames.append(tb)
        tb = tb.tb_next
    for tb in reversed(frames):  # from the frame that raised it outward
        decides, spec = _owner(tb.tb_frame.f_code.co_filename)
        if decides:
            if spec is None:
                return None
            code = tb.tb_frame.f_code
            return spec, traceback.FrameSummary(code.co_filename, tb.tb_lineno, code.co_name, lookup_line=False)
    return None
