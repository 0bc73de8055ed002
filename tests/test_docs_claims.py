"""The docs are checked by the tests, so they cannot drift from the code: every Python block of README.md and
docs/*.md runs (or says on the line above it why it cannot), every `lst-fast COMMAND --flag` they write is
a flag of that command's real parser, every member docs/api.md lists exists, and every page is in the
site's navigation and in docs/index.md. The last tests show that the checks fail when a flag or a member
the docs name is removed."""

from __future__ import annotations

import warnings

import pytest
import torch
from docs_claims import (
    ROOT,
    api_members,
    command_mentions,
    doc_pages,
    fill_placeholders,
    linked_pages,
    missing_api_members,
    nav_pages,
    parser_flags,
    python_blocks,
    resolve_dotted,
    unknown_flags,
)

from lst_fast.cli import build_parser
from conftest import tiny_cnn

BLOCKS = python_blocks()


def test_there_are_python_blocks_and_each_unrunnable_one_says_why():
    assert len(BLOCKS) >= 3, [b.where for b in BLOCKS]
    for block in BLOCKS:
        assert block.not_run is None or len(block.not_run) >= 10, f"{block.where}: say why it is not run"


def placeholder_values() -> dict:
    """What a block's `name = ...` lines stand for: a small seeded RGB classifier and images in [0, 1]."""
    model = tiny_cnn(channels=3, classes=10, size=16).eval()
    generator = torch.Generator().manual_seed(0)
    x = torch.rand(2, 3, 16, 16, generator=generator)
    y = torch.rand(2, 3, 16, 16, generator=generator)
    with torch.no_grad():
        labels = model(x).argmax(1)
    return {"model": model, "x": x, "y": y, "true_labels": labels}


@pytest.mark.parametrize("block", [b for b in BLOCKS if b.not_run is None], ids=lambda b: b.where)
def test_every_runnable_python_block_runs(block, tmp_path, monkeypatch):
    code, names = fill_placeholders(block.code)
    values = placeholder_values()
    assert names <= set(values), f"{block.where}: no test value for placeholders {sorted(names - set(values))}"
    monkeypatch.chdir(tmp_path)  # blocks that save write here
    namespace = {name: values[name] for name in names}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # bf16 emulated on CPUs without bf16 instructions
        exec(compile(code, block.where, "exec"), namespace)


FLAGS = parser_flags(build_parser())
MENTIONS = [m for page in doc_pages() for m in command_mentions(page)]


def test_the_docs_name_many_commands_and_flags():
    assert len(MENTIONS) >= 40 and sum(len(m.flags) for m in MENTIONS) >= 80, len(MENTIONS)
    assert {m.command for m in MENTIONS} >= {"demo", "eval", "leaderboard", "site", "compare", "report", "run"}


def test_every_flag_the_docs_write_is_parsed_by_its_command():
    assert unknown_flags(MENTIONS, FLAGS) == []


def test_the_flag_check_fails_when_a_flag_the_docs_name_is_removed():
    """Take --rounds away from eval's parser: the check names every page that writes `lst-fast eval --rounds`."""
    assert any("--rounds" in m.flags for m in MENTIONS if m.command == "eval")
    without = {**FLAGS, "eval": FLAGS["eval"] - {"--rounds"}}
    problems = unknown_flags(MENTIONS, without)
    assert problems and all("eval takes no --rounds" in p for p in problems), problems
    renamed = {k: v for k, v in FLAGS.items() if k != "site"}
    assert any("no command 'site'" in p for p in unknown_flags(MENTIONS, renamed))


API = api_members((ROOT / "docs" / "api.md").read_text())


def test_every_member_docs_api_lists_exists():
    assert len(API) >= 20, API
    assert missing_api_members(API, resolve_dotted) == []


def test_the_member_check_fails_when_a_member_the_docs_list_is_removed(monkeypatch):
    import lst_fast

    assert ("lst_fast.TraversalResult", "save") in API
    monkeypatch.delattr(lst_fast.TraversalResult, "save")
    assert missing_api_members(API, resolve_dotted) == ["docs/api.md: lst_fast.TraversalResult has no member 'save'"]


def test_every_page_is_in_the_navigation_and_the_index():
    pages = sorted(p.name for p in (ROOT / "docs").glob("*.md"))
    nav = nav_pages((ROOT / "mkdocs.yml").read_text())
    assert sorted(nav) == pages, "docs/*.md and mkdocs.yml's nav differ"
    index = linked_pages((ROOT / "docs" / "index.md").read_text())
    assert sorted(set(pages) - {"index.md"} - index) == [], "pages docs/index.md does not link"


def test_every_test_docs_reliability_names_exists():
    """docs/RELIABILITY.md lists each case with its test: every `test_file::test_name` it names is a test."""
    import re

    text = (ROOT / "docs" / "RELIABILITY.md").read_text()
    named = set(re.findall(r"\b(test_\w+)::(test_\w+)", text))
    assert len(named) >= 100, len(named)
    missing = [
        f"{module}::{name}"
        for module, name in sorted(named)
        if not (ROOT / "tests" / f"{module}.py").is_file()
        or f"def {name}(" not in (ROOT / "tests" / f"{module}.py").read_text()
    ]
    assert missing == [], missing
