"""The public API stays where users import it from, whatever the package's inner layout, and the top of
lst_fast/ lists at most 14 modules, each a part (docs/ARCHITECTURE.md)."""

from __future__ import annotations

import importlib
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "lst_fast"


def test_the_public_names_import_from_the_package_root():
    import lst_fast

    for name in ("traverse", "LevelSetTraversal", "LSTSettings", "TraversalResult", "backend_info"):
        assert callable(getattr(lst_fast, name)), name
    from lst_fast import LevelSetTraversal, LSTSettings, TraversalResult, backend_info, traverse  # noqa: F401


def test_the_public_modules_import_at_their_paths():
    geometry = importlib.import_module("lst_fast.geometry")
    metrics = importlib.import_module("lst_fast.metrics")
    ops = importlib.import_module("lst_fast.ops")
    assert callable(geometry.linear_path_confidence) and callable(metrics.distances)
    assert callable(ops.orthogonal_step)


def test_the_top_level_holds_at_most_14_modules():
    modules = sorted(p.name for p in PACKAGE.glob("*.py"))
    assert len(modules) <= 14, modules
