"""The package works without the compiled extension (pure-PyTorch fallback)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# The import with its warnings recorded: a _C that is built but does not load warns once, on purpose not at all.
IMPORT = r"""
import json, warnings
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    import lst_fast
    import lst_fast.ops  # a second import path: still one warning
import_warnings = [str(w.message) for w in caught if issubclass(w.category, UserWarning)]
"""

LOAD_SCRIPT = (
    IMPORT
    + r"""
print(json.dumps({"warnings": import_warnings, "info": lst_fast.backend_info()}))
"""
)

SCRIPT = (
    IMPORT
    + r"""
import torch
torch.manual_seed(0)
model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 4))
x, y = torch.rand(3, 1, 4, 4), torch.rand(3, 1, 4, 4)
r = lst_fast.traverse(model, x, y, iterations=5)
try:
    lst_fast.ops.simplex_points(torch.rand(1, 2, 3), torch.rand(2, 2), backend="native")
    native_error = None
except RuntimeError as e:
    native_error = str(e)
# The ops still exist in the dispatcher (the reference is their kernel) and still check their arguments.
try:
    torch.ops.lst_fast.orthogonal_step(x, y.double(), x, torch.zeros_like(x), 0.1, 0.0, 0.0, 1.0)
    check_error = None
except RuntimeError as e:
    check_error = str(e)
torch.library.opcheck(torch.ops.lst_fast.simplex_points.default, (torch.rand(2, 3, 4), torch.rand(5, 3)))
print(json.dumps({"warnings": import_warnings, "info": lst_fast.backend_info(), "shape": list(r.images.shape),
                  "finite": bool(torch.isfinite(r.images).all()), "native_error": native_error,
                  "check_error": check_error}))
"""
)


def _run_with_broken_extension(tmp_path, extra_env, script=LOAD_SCRIPT):
    """`script` on lst_fast copied with a _C that exists but cannot load (as beside an incompatible torch)."""
    import shutil

    shutil.copytree(ROOT / "lst_fast", tmp_path / "lst_fast", ignore=shutil.ignore_patterns("*.so", "__pycache__"))
    (tmp_path / "lst_fast" / "_C.abi3.so").write_bytes(b"not a shared library")
    env = {k: v for k, v in os.environ.items() if k != "LST_FAST_DISABLE_EXTENSION"}
    env.update(PYTHONPATH=str(tmp_path), **extra_env)
    out = subprocess.run(
        [sys.executable, "-c", script], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def forced_fallback(tmp_path_factory):
    """SCRIPT's report with the extension forced missing (LST_FAST_DISABLE_EXTENSION=1), in one process (a
    torch import) for two tests: the fallback works, and forcing it is quiet. Its copy of lst_fast has a _C
    that cannot load, so a _C loaded despite the variable would show: a warning, another extension_error."""
    return _run_with_broken_extension(tmp_path_factory.mktemp("forced"), {"LST_FAST_DISABLE_EXTENSION": "1"}, SCRIPT)


def test_traverse_runs_with_extension_forced_missing(forced_fallback):
    report = forced_fallback
    assert report["info"]["extension_loaded"] is False
    assert "LST_FAST_DISABLE_EXTENSION" in report["info"]["extension_error"]
    assert report["info"]["cpu"] == "reference" and report["info"]["cuda"] == "reference"
    assert report["shape"] == [3, 1, 4, 4] and report["finite"]
    assert "no compiled kernel" in report["native_error"]
    assert report["check_error"] == "lst_fast::orthogonal_step: target has dtype Double but x has dtype Float"


def test_forcing_the_fallback_is_quiet(forced_fallback):
    report = forced_fallback
    assert report["warnings"] == []
    assert "LST_FAST_DISABLE_EXTENSION" in report["info"]["extension_error"]


def test_backend_info_reports_the_build():
    import lst_fast

    info = lst_fast.backend_info()
    assert set(info) >= {"lst_fast", "torch", "extension_loaded", "cpu", "cuda"}
    if info["extension_loaded"]:
        assert info["cpu"] == "native"


def test_a_built_extension_that_does_not_load_warns_once(tmp_path):
    report = _run_with_broken_extension(tmp_path, {})
    assert len(report["warnings"]) == 1, report["warnings"]
    message = report["warnings"][0]
    assert "lst_fast._C was built but does not load" in message and "Fix:" in message
    assert report["info"]["extension_loaded"] is False and report["info"]["cpu"] == "reference"
    assert report["info"]["extension_error"]  # the details stay in backend_info()
