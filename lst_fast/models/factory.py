"""Models from the user's own factory function: `py:MODULE:FUNCTION` or `py:MODULE:FUNCTION(key=value, ...)`.

MODULE is a module name (imported with the current folder on the path, as uvicorn and gunicorn do) or
the path of a .py file. The keyword arguments are Python literals (numbers, strings, True/False/None,
tuples, lists, dicts), read with ast.literal_eval: nothing is executed but the import and the call.

An error raised in that module's code (its import, FUNCTION, the module's forward) is the user's, not a
bug in lst_fast: `lst-fast` reports it in one line naming the spec, exit code 1 (lst_fast.models.user_code).

FUNCTION returns a torch.nn.Module that takes images in [0, 1]. Optional attributes on that module say
more about it (each may be absent):
    lst_mean, lst_std       per-channel normalization to apply in front (absent: it normalizes inside)
    lst_input_size          (C, H, W) of its input (absent: 3 x 224 x 224)
    lst_crop_pct, lst_interpolation   the resize and crop of image files (absent: 0.875, bilinear)
    lst_class_names         one name per class
"""

from __future__ import annotations

import ast
import contextlib
import importlib
import importlib.util
import os
import sys
from pathlib import Path
from typing import Any, Dict, Iterator, Tuple

from torch import nn

from lst_fast.data.preprocessing import Preprocessing
from lst_fast.errors import InputError, InputTypeError, MissingFile
from lst_fast.models.user_code import record_user_code, record_user_module

USAGE = "py:MODULE:FUNCTION or py:MODULE:FUNCTION(key=value, ...) with Python literal values"


def parse_spec(spec: str) -> Tuple[str, str, Dict[str, Any]]:
    """(module, function, keyword arguments) of a py: spec."""
    if not spec.startswith("py:"):
        raise InputError(f"a factory model is {USAGE}, got {spec!r}")
    rest, call = spec[3:], ""
    if rest.endswith(")") and "(" in rest:
        rest, call = rest[: rest.index("(")], rest[rest.index("(") :]
    module, _, function = rest.rpartition(":")
    if not module or not function.isidentifier():
        raise InputError(f"a factory model is {USAGE}, got {spec!r}")
    return module, function, _keywords(spec, call)


def _keywords(spec: str, call: str) -> Dict[str, Any]:
    if not call:
        return {}
    try:
        node = ast.parse("f" + call, mode="eval").body
    except SyntaxError:
        raise InputError(f"{spec}: the arguments {call} are not valid Python; use {USAGE}") from None
    if not isinstance(node, ast.Call) or node.args or any(k.arg is None for k in node.keywords):
        raise InputError(f"{spec}: give keyword arguments only, like FUNCTION(depth=18, name='x')")
    out: Dict[str, Any] = {}
    for keyword in node.keywords:
        assert keyword.arg is not None  # **kwargs refused above
        try:
            out[keyword.arg] = ast.literal_eval(keyword.value)
        except ValueError:
            raise InputError(
                f"{spec}: the value of {keyword.arg} must be a Python literal (a number, string, "
                f"True/False/None, or a tuple/list/dict of them), got {ast.unparse(keyword.value)}"
            ) from None
    return out


@contextlib.contextmanager
def _current_folder_on_path() -> Iterator[None]:
    """The current folder first on sys.path while importing (the console script's path lacks it)."""
    cwd = os.getcwd()
    added = cwd not in sys.path
    if added:
        sys.path.insert(0, cwd)
    try:
        yield
    finally:
        if added and cwd in sys.path:
            sys.path.remove(cwd)


def _import(spec: str, module: str):
    if module.endswith(".py"):
        path = Path(module).expanduser()
        if not path.is_file():
            raise MissingFile(f"{spec}: no Python file {path}")
        record_user_code(spec, path)  # before it runs: an error in its body is the user's (exit code 1)
        unit = importlib.util.spec_from_file_location(path.stem, path)
        if unit is None or unit.loader is None:
            raise InputError(f"{spec}: {path} cannot be imported as a Python module")
        loaded = importlib.util.module_from_spec(unit)
        try:
            unit.loader.exec_module(loaded)
        except SyntaxError as error:
            raise _syntax_error(spec, error) from error
        return loaded
    with _current_folder_on_path():
        record_user_module(spec, module)
        try:
            return importlib.import_module(module)
        except SyntaxError as error:
            raise _syntax_error(spec, error) from error
        except ModuleNotFoundError as error:
            if error.name and module.startswith(error.name):  # the module itself (or its package) is missing
                raise InputError(
                    f"{spec}: no Python module {module!r} (looked in the current folder and on "
                    "sys.path; a file path must end in .py)"
                ) from None
            raise


def _syntax_error(spec: str, error: SyntaxError) -> InputError:
    """A syntax error in the user's module (no frame of theirs runs, so user_code cannot tell): theirs."""
    return InputError(f"{spec}: {error.filename}, line {error.lineno}: {error.msg}")


def load(spec: str) -> Tuple[nn.Module, Preprocessing, Any, Any, Any]:
    """(module, preprocessing, mean, std, class names) from the factory of `spec`."""
    module_name, function_name, keywords = parse_spec(spec)
    module = _import(spec, module_name)
    factory = getattr(module, function_name, None)
    if factory is None:
        raise InputError(f"{spec}: module {module_name!r} has no {function_name!r}")
    if not callable(factory):
        raise InputError(f"{spec}: {module_name}.{function_name} is not callable (a {type(factory).__name__})")
    try:
        net = factory(**keywords)
    except TypeError as error:
        raise InputError(f"{spec}: calling {function_name}(**{keywords}) failed: {error}") from error
    if not isinstance(net, nn.Module):
        raise InputTypeError(f"{spec}: {function_name} returned {type(net).__name__}, not a torch.nn.Module")
    try:
        c, h, w = (int(v) for v in getattr(net, "lst_input_size", (3, 224, 224)))
        pre = Preprocessing(
            (c, h, w),
            getattr(net, "lst_interpolation", "bilinear"),
            float(getattr(net, "lst_crop_pct", 0.875)),
            "center",
        )
    except (TypeError, ValueError) as error:
        raise InputError(f"{spec}: its lst_input_size / lst_crop_pct / lst_interpolation: {error}") from None
    return (
        net.eval(),
        pre,
        getattr(net, "lst_mean", None),
        getattr(net, "lst_std", None),
        getattr(net, "lst_class_names", None),
    )
