"""What the docs claim, read out of their Markdown so the tests can check it against the code: the Python
blocks (run by tests/test_docs_claims.py), every `lst-fast COMMAND --flag` written anywhere, the members
docs/api.md lists, and the pages of mkdocs.yml's nav and of docs/index.md.

Pure text functions: each check takes what it compares against (a parser's flags, an object to look
members up on), so a test can show it failing when a flag or a member is gone."""

from __future__ import annotations

import argparse
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, Iterator, List, Optional, Set

ROOT = Path(__file__).resolve().parents[1]

# A Python block that cannot run in the tests says so on the line above it, with the reason:
#   <!-- not run: needs a CUDA GPU -->
NOT_RUN = re.compile(r"<!--\s*not run:\s*(?P<why>[^>]*?)\s*-->")
# A placeholder line of a runnable block, `model = ...  # any nn.Module`: the test supplies the value.
PLACEHOLDER = re.compile(r"^(?P<name>\w+) = \.\.\.(?P<rest>\s*(#.*)?)$")
FENCE = re.compile(r"^```(?P<lang>\w*)\s*$")


def doc_pages() -> List[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


@dataclass(frozen=True)
class CodeBlock:
    page: Path
    line: int  # of the opening fence, 1-based
    lang: str
    code: str
    not_run: Optional[str]  # the reason, for a block marked as not runnable

    @property
    def where(self) -> str:
        return f"{self.page.relative_to(ROOT)}:{self.line}"


def code_blocks(page: Path) -> List[CodeBlock]:
    """Every fenced block of a Markdown page, with the not-run mark of the line above it."""
    lines = page.read_text().splitlines()
    blocks, i = [], 0
    while i < len(lines):
        match = FENCE.match(lines[i])
        if not match:
            i += 1
            continue
        end = next((j for j in range(i + 1, len(lines)) if lines[j].strip() == "```"), len(lines))
        above = next((lines[j] for j in range(i - 1, -1, -1) if lines[j].strip()), "")
        mark = NOT_RUN.search(above)
        blocks.append(
            CodeBlock(page, i + 1, match.group("lang"), "\n".join(lines[i + 1 : end]), mark and mark.group("why"))
        )
        i = end + 1
    return blocks


def python_blocks() -> List[CodeBlock]:
    return [b for page in doc_pages() for b in code_blocks(page) if b.lang == "python"]


def fill_placeholders(code: str) -> tuple[str, Set[str]]:
    """The block with each `name = ...` line removed (the test puts `name` in the namespace), and the names."""
    names, kept = set(), []
    for line in code.splitlines():
        match = PLACEHOLDER.match(line)
        if match:
            names.add(match.group("name"))
        else:
            kept.append(line)
    return "\n".join(kept), names


# -- `lst-fast COMMAND --flag` ---------------------------------------------------------------------------


@dataclass(frozen=True)
class CommandMention:
    where: str
    command: str
    flags: tuple

    def __str__(self) -> str:
        return f"{self.where}: lst-fast {self.command} {' '.join(self.flags)}"


INLINE = re.compile(r"`([^`\n]+)`")
MENTION = re.compile(r"(?:^|[\s(;&|])lst-fast\s+(?P<command>[a-z]+)(?P<rest>[^\n;&|]*)")
FLAG = re.compile(r"(?<![\w-])(--[a-z][a-z0-9-]*)")


def _mentions_in(text: str, where: str) -> Iterator[CommandMention]:
    for match in MENTION.finditer(text):
        rest = match.group("rest").split("#", 1)[0]  # a shell comment says things, it runs nothing
        yield CommandMention(where, match.group("command"), tuple(FLAG.findall(rest)))


def command_mentions(page: Path) -> List[CommandMention]:
    """Every `lst-fast COMMAND ...` of a page: in shell blocks (continuation lines joined) and in inline code."""
    mentions: List[CommandMention] = []
    text = page.read_text()
    for block in code_blocks(page):
        if block.lang in ("bash", "sh", "shell", "console", ""):
            joined = re.sub(r"\\\n\s*", " ", block.code)
            mentions += _mentions_in(joined, block.where)
    outside = re.sub(r"^```.*?^```", "", text, flags=re.S | re.M)
    for number, line in enumerate(outside.splitlines(), 1):
        for span in INLINE.findall(line):
            mentions += _mentions_in(span, f"{page.relative_to(ROOT)} (inline, near line {number})")
    return mentions


def parser_flags(parser: argparse.ArgumentParser) -> Dict[str, Set[str]]:
    """Each subcommand's option strings, from lst-fast's real parser."""
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return {
        name: {s for action in command._actions for s in action.option_strings} for name, command in sub.choices.items()
    }


def unknown_flags(mentions: List[CommandMention], flags: Dict[str, Set[str]]) -> List[str]:
    """The mentions that name a command lst-fast lacks or a flag that command's parser does not take."""
    problems = []
    for mention in mentions:
        if mention.command not in flags:
            problems.append(f"{mention}: no command {mention.command!r}")
            continue
        missing = [f for f in mention.flags if f not in flags[mention.command]]
        if missing:
            problems.append(f"{mention}: {mention.command} takes no {', '.join(missing)}")
    return problems


# -- docs/api.md ----------------------------------------------------------------------------------------

DIRECTIVE = re.compile(r"^::: (?P<path>[\w.]+)\s*$((?:\n    .*)*)", re.M)
MEMBERS = re.compile(r"members:\s*\[(?P<names>[^\]]*)\]")


def api_members(text: str) -> List[tuple]:
    """(object path, member or None) for every `::: path` of docs/api.md and every member its options list."""
    found = []
    for match in DIRECTIVE.finditer(text):
        path = match.group("path")
        found.append((path, None))
        members = MEMBERS.search(match.group(2))
        if members:
            found += [(path, name.strip().strip("\"'")) for name in members.group("names").split(",") if name.strip()]
    return found


def missing_api_members(listed: List[tuple], resolve: Callable[[str], object]) -> List[str]:
    problems = []
    for path, member in listed:
        try:
            owner = resolve(path)
        except (ImportError, AttributeError) as error:
            problems.append(f"docs/api.md: {path} does not resolve ({error})")
            continue
        if member is not None and not hasattr(owner, member):
            problems.append(f"docs/api.md: {path} has no member {member!r}")
    return problems


def resolve_dotted(path: str) -> object:
    """lst_fast.geometry -> the module; lst_fast.TraversalResult -> the class."""
    import importlib

    parts = path.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        for name in parts[cut:]:
            obj = getattr(obj, name)
        return obj
    raise ImportError(f"no module in {path}")


# -- the site's pages ------------------------------------------------------------------------------------


def nav_pages(mkdocs_yml: str) -> List[str]:
    return re.findall(r"^\s*- .*: (\S+\.md)\s*$", mkdocs_yml, flags=re.M)


def linked_pages(markdown: str) -> Set[str]:
    return {target.split("#", 1)[0] for target in re.findall(r"\]\(([^)\s]+\.md)(?:#[^)]*)?\)", markdown)}
