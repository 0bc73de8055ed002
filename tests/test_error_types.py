"""lst_fast raises only its own error types (lst_fast/errors.py), so the command line can tell an error of the
input or environment (exit 1) from a bug by the type alone: a standard ValueError, TypeError, RuntimeError or
ImportError raised inside lst_fast would be reported as a bug. A missing file is a MissingFile (also a
FileNotFoundError), not a bare FileNotFoundError or OSError. Read from the source with `ast`."""

from __future__ import annotations

import ast

from test_layout import MODULES  # dotted module name -> file, for every module of lst_fast

STANDARD = {"ValueError", "TypeError", "RuntimeError", "ImportError", "FileNotFoundError", "OSError", "IOError"}


def _raised_name(node: ast.Raise) -> str:
    exc = node.exc.func if isinstance(node.exc, ast.Call) else node.exc
    return exc.id if isinstance(exc, ast.Name) else ""


def test_lst_fast_raises_no_standard_error_type_of_its_own():
    found = []
    for module, path in MODULES.items():
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Raise) and node.exc is not None and _raised_name(node) in STANDARD:
                found.append(f"{module}:{node.lineno} raises {_raised_name(node)}")
    assert not found, "raise lst_fast.errors' types instead (InputError, InputTypeError, ...): " + "; ".join(found)


def test_the_check_sees_a_standard_raise():
    tree = ast.parse("def f():\n    raise ValueError('x')\n    raise FileNotFoundError('y')\n")
    assert [_raised_name(n) for n in ast.walk(tree) if isinstance(n, ast.Raise)] == ["ValueError", "FileNotFoundError"]
    assert {"FileNotFoundError", "OSError"} <= STANDARD


def test_a_missing_file_is_lst_fasts_own_type_and_still_a_file_not_found_error(tmp_path, capsys):
    from lst_fast.cli.errors import is_expected
    from lst_fast.errors import LstFastError, MissingFile
    from lst_fast.evaluation.pool import load_pool

    try:
        load_pool(tmp_path / "no-pool.json")
    except FileNotFoundError as error:  # callers that catch the standard type keep working
        assert isinstance(error, MissingFile) and isinstance(error, LstFastError) and is_expected(error)
        assert "no-pool.json" in str(error)
    else:
        raise AssertionError("a missing pool file was read")
