"""docs/ARCHITECTURE.md's layout tree is the layout on disk: every module and native source file is listed
once, and everything listed exists."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SOURCES = ("*.py", "*.cpp", "*.cu", "*.h", "*.cuh", "*.map")


def tree_paths() -> list:
    """The file paths the tree in docs/ARCHITECTURE.md names, from its indentation (two spaces a level)."""
    text = (ROOT / "docs" / "ARCHITECTURE.md").read_text()
    block = text.split("## The layout", 1)[1].split("```", 2)[1]
    stack, paths = [], []
    for line in block.splitlines():
        match = re.match(r"( *)(\S+)", line)
        if not match:
            continue
        depth, name = len(match.group(1)) // 2, match.group(2)
        stack = stack[:depth] + [name.rstrip("/")]
        if not name.endswith("/"):
            paths.append("/".join(stack))
    return paths


def disk_paths() -> set:
    found = set()
    for top in ("csrc", "lst_fast"):
        for pattern in SOURCES:
            found |= {str(p.relative_to(ROOT)) for p in (ROOT / top).rglob(pattern) if "__pycache__" not in p.parts}
    return found


def test_the_layout_tree_lists_every_module_once_and_nothing_else():
    listed = tree_paths()
    assert len(listed) == len(set(listed)), "a module is listed twice"
    on_disk = disk_paths()
    assert sorted(on_disk - set(listed)) == [], "on disk, missing from docs/ARCHITECTURE.md"
    assert sorted(set(listed) - on_disk) == [], "in docs/ARCHITECTURE.md, not on disk"
