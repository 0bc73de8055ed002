"""The package's layout rules (docs/ARCHITECTURE.md): no import circles between lst_fast's modules, and no
module reaches into another module's private names (`from lst_fast.x import _y`, `x._y`).

Read from the source with `ast`, so every import counts, also those inside functions (a lazy import only
hides a circle)."""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Dict, List, Set, Tuple

PACKAGE = Path(__file__).resolve().parents[1] / "lst_fast"


def _modules() -> Dict[str, Path]:
    """Dotted module name -> file, for every .py file of the package (a package is its __init__)."""
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found[".".join(parts)] = path
    return found


MODULES = _modules()


def _owner(name: str) -> str:
    """The lst_fast module a dotted name lives in ('' when it is not lst_fast's)."""
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name


def _imports(tree: ast.AST) -> List[Tuple[str, ast.AST]]:
    """(imported module, node) for each import of an lst_fast module: `from A import b` imports A.b when
    that is a module, else A."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(_owner(alias.name), node) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:
                full = f"{node.module}.{alias.name}"
                found.append((full if full in MODULES else _owner(node.module), node))
    return [(name, node) for name, node in found if name]


def import_graph() -> Dict[str, Set[str]]:
    graph = {}
    for name, path in MODULES.items():
        graph[name] = {target for target, _ in _imports(ast.parse(path.read_text())) if target != name}
    return graph


def import_cycles(graph: Dict[str, Set[str]]) -> List[List[str]]:
    """The strongly connected components with more than one module (Tarjan), each sorted."""
    index: Dict[str, int] = {}
    low: Dict[str, int] = {}
    stack: List[str] = []
    cycles: List[List[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return cycles


def _private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


def private_uses() -> List[str]:
    """'module:line: what' for every private name of one lst_fast module used in another. Private modules
    (`_extension`, `_C`) are the package's own and may be imported; their private names may not."""
    problems = []
    for name, path in MODULES.items():
        tree = ast.parse(path.read_text())
        bound: Dict[str, str] = {}  # local name -> lst_fast module it refers to
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    if not _owner(alias.name):
                        continue
                    if alias.asname:  # import lst_fast.x as y: y is lst_fast.x
                        bound[alias.asname] = alias.name
                    else:  # import lst_fast.x: the name bound is lst_fast
                        bound[alias.name.partition(".")[0]] = alias.name.partition(".")[0]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0 and _owner(node.module):
                for alias in node.names:
                    full = f"{node.module}.{alias.name}"
                    if full in MODULES:
                        bound[alias.asname or alias.name] = full
                    elif _private(alias.name) and _owner(node.module) != name:
                        problems.append(f"{name}:{node.lineno}: from {node.module} import {alias.name}")
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and _private(node.attr):
                dotted = _dotted(node.value, bound)
                if dotted in MODULES and dotted != name and f"{dotted}.{node.attr}" not in MODULES:
                    problems.append(f"{name}:{node.lineno}: {dotted}.{node.attr}")
    return problems


def _dotted(node: ast.AST, bound: Dict[str, str]) -> str:
    """The module an expression like `plots` or `lst_fast.evaluation.store` names ('' if none)."""
    if isinstance(node, ast.Name):
        return bound.get(node.id, "")
    if isinstance(node, ast.Attribute):
        base = _dotted(node.value, bound)
        return f"{base}.{node.attr}" if base else ""
    return ""


def test_the_graph_sees_imports_inside_functions():
    graph = import_graph()
    assert "lst_fast.walk.traversal" in graph["lst_fast"]  # a top-level import
    assert "lst_fast.evaluation.runner" in graph["lst_fast.evaluation"]
    assert import_cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_import_cycles():
    assert import_cycles(import_graph()) == []


def test_no_private_names_across_modules():
    assert private_uses() == []
