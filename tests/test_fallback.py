"""The package works without the compiled extension (pure-PyTorch fallback)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

SCRIPT = r"""
import json, torch, lst_fast
torch.manual_seed(0)
model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 4))
x, y = torch.rand(3, 1, 4, 4), torch.rand(3, 1, 4, 4)
r = lst_fast.traverse(model, x, y, iterations=5)
try:
    lst_fast.ops.simplex_points(torch.rand(1, 2, 3), torch.rand(2, 2), backend="native")
    native_error = None
except RuntimeError as e:
    native_error = str(e)
print(json.dumps({"info": lst_fast.backend_info(), "shape": list(r.images.shape),
                  "finite": bool(torch.isfinite(r.images).all()), "native_error": native_error}))
"""


def test_traverse_runs_with_extension_forced_missing():
    env = {**os.environ, "LST_FAST_DISABLE_EXTENSION": "1", "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout.strip().splitlines()[-1])
    assert report["info"]["extension_loaded"] is False
    assert "LST_FAST_DISABLE_EXTENSION" in report["info"]["extension_error"]
    assert report["info"]["cpu"] == "reference" and report["info"]["cuda"] == "reference"
    assert report["shape"] == [3, 1, 4, 4] and report["finite"]
    assert "no compiled kernel" in report["native_error"]


def test_backend_info_reports_the_build():
    import lst_fast

    info = lst_fast.backend_info()
    assert set(info) >= {"lst_fast", "torch", "extension_loaded", "cpu", "cuda"}
    if info["extension_loaded"]:
        assert info["cpu"] == "native"
