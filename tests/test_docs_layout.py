"""docs/ARCHITECTURE.md's layout tree is the layout on disk: every module and native source file is listed
once, and everything listed exists. The README stays a front page, the docs site (mkdocs.yml) lists every
page, and no page points outside the repository (`mkdocs build --strict` in .ci/run checks the rest)."""

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


LINK = re.compile(r"\]\(([^)\s]+)\)")


def pages() -> list:
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def test_the_readme_is_a_front_page_with_the_test_command():
    readme = (ROOT / "README.md").read_text()
    assert len(readme.splitlines()) <= 250, "README.md is over 250 lines: move reference text into a docs/ page"
    assert "\npython3 -m pytest -q -n 2\n" in readme, "the README's test command (CI runs it) is gone"
    assert "\npython3 -m pytest -q -n 2\n" in (ROOT / ".ci" / "run").read_text(), "CI runs another test command"


def test_the_docs_never_point_outside_the_repository():
    """Every relative link of the README and docs/*.md names a file of this repository; nothing names the
    session's shared folder or its spec."""
    for page in pages():
        text = page.read_text()
        assert "SPEC.md" not in text and "../shared" not in text and "/shared/" not in text, page
        for target in LINK.findall(text):
            if target.startswith(("http://", "https://", "mailto:", "#")):
                continue
            path = (page.parent / target.split("#", 1)[0]).resolve()
            assert path.is_relative_to(ROOT), f"{page.name} links outside the repository: {target}"
            assert path.exists(), f"{page.name} links to a missing file: {target}"


def test_every_docs_page_is_in_the_site_nav():
    nav = re.findall(r"^\s*- .*: (\S+\.md)\s*$", (ROOT / "mkdocs.yml").read_text(), flags=re.M)
    assert len(nav) == len(set(nav)), "a page is listed twice in mkdocs.yml's nav"
    assert sorted(nav) == sorted(p.name for p in (ROOT / "docs").glob("*.md")), "docs/*.md and mkdocs.yml's nav"


def test_the_docs_toolchain_is_pinned_exactly():
    """Material for MkDocs warns that MkDocs 2.0 will break it: the docs extra pins every tool of the build, so
    no new release changes the site unnoticed (an upgrade is an edit to pyproject.toml and a strict build)."""
    import tomllib

    docs = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]["docs"]
    names = {re.split(r"[=<>\[]", d, maxsplit=1)[0] for d in docs}
    assert {"mkdocs", "mkdocs-material", "mkdocstrings", "mkdocstrings-python"} <= names, docs
    assert all(re.fullmatch(r"[\w.-]+==[\w.]+", d) for d in docs), docs
