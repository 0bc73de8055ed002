"""How values travel between lst_fast's modules (docs/ARCHITECTURE.md, "One run environment"), read from the
source with `ast`: no function takes more than 8 parameters, and no call from one module to a function of
another passes more than 4 positional arguments (so two values of one type cannot be swapped unnoticed).

Exempt: the operators' schema mirrors (their parameters are the op schemas') and the public measurement
functions (lst_fast.geometry's and lst_fast.metrics', whose keywords are their API). NOT_YET lists what
still breaks a rule; the test fails when the list is stale, so it only shrinks."""

from __future__ import annotations

import ast
from typing import Dict, Set

from test_layout import MODULES  # dotted module name -> file, for every module of lst_fast

MAX_PARAMETERS = 8
MAX_POSITIONAL = 4

# module:function
SCHEMA_MIRRORS = {
    "lst_fast.ops:orthogonal_step",
    "lst_fast.ops:confidence_accept",
    "lst_fast.backends.op_checks:check_orthogonal_step",
    "lst_fast.backends.op_checks:check_confidence_accept",
    "lst_fast.backends.reference:orthogonal_step",
    "lst_fast.backends.reference:confidence_accept",
}
MEASUREMENT_MODULES = ("lst_fast.geometry", "lst_fast.metrics")

# What still breaks a rule (empty: issue 32, item 2 holds).
NOT_YET: Set[str] = set()


def _exempt(module: str, function: str) -> bool:
    name = f"{module}:{function}"
    public_measurement = module in MEASUREMENT_MODULES and not function.startswith("_")
    return name in SCHEMA_MIRRORS or public_measurement


def _parameter_count(node: ast.AST) -> int:
    args = node.args  # type: ignore[attr-defined]
    names = [a.arg for a in args.posonlyargs + args.args + args.kwonlyargs]
    count = len(names) + (args.vararg is not None) + (args.kwarg is not None)
    return count - (1 if names and names[0] in ("self", "cls") else 0)


def parameter_problems() -> Set[str]:
    problems = set()
    for module, path in MODULES.items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and _parameter_count(node) > MAX_PARAMETERS:
                if not _exempt(module, node.name):
                    problems.add(f"parameters {module}:{node.name}")
    return problems


def _imported_names(tree: ast.AST) -> Dict[str, str]:
    """Local name -> what it is in lst_fast: 'module' for a module, 'module:name' for a name of one."""
    bound = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0 and node.module.startswith("lst_fast"):
            for alias in node.names:
                full = f"{node.module}.{alias.name}"
                bound[alias.asname or alias.name] = full if full in MODULES else f"{node.module}:{alias.name}"
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name in MODULES and alias.asname:
                    bound[alias.asname] = alias.name
    return bound


def _callee(func: ast.AST, bound: Dict[str, str]) -> str:
    """'module:function' of an lst_fast function called from another module ('' when it is not one)."""
    if isinstance(func, ast.Name):
        target = bound.get(func.id, "")
        return target if ":" in target else ""
    if isinstance(func, ast.Attribute):
        if isinstance(func.value, ast.Name):
            target = bound.get(func.value.id, "")
            if target in MODULES:
                return f"{target}:{func.attr}"
            if ":" in target:  # Class.method of an imported class
                return f"{target}.{func.attr}"
        if isinstance(func.value, ast.Attribute) and isinstance(func.value.value, ast.Name):
            target = bound.get(func.value.value.id, "")
            if target in MODULES:  # module.Class.method
                return f"{target}:{func.value.attr}.{func.attr}"
    return ""


def call_problems() -> Set[str]:
    problems = set()
    for module, path in MODULES.items():
        tree = ast.parse(path.read_text())
        bound = _imported_names(tree)
        for node in ast.walk(tree):
            if not isinstance(node, ast.Call):
                continue
            positional = [a for a in node.args if not isinstance(a, ast.Starred)]
            if len(positional) <= MAX_POSITIONAL:
                continue
            callee = _callee(node.func, bound)
            if not callee:
                continue
            owner, _, function = callee.partition(":")
            if owner != module and not _exempt(owner, function.partition(".")[0]):
                problems.add(f"call {module} -> {callee}")
    return problems


def test_the_rules_see_a_problem():
    assert _parameter_count(ast.parse("def f(a, b, c, d, e, f, g, h, i): pass").body[0]) == 9
    tree = ast.parse("from lst_fast.evaluation import runner\nrunner.run_evaluation(1, 2, 3, 4, 5)")
    assert _callee(tree.body[1].value.func, _imported_names(tree)) == "lst_fast.evaluation.runner:run_evaluation"


def test_no_function_takes_more_than_8_parameters():
    found = parameter_problems()
    assert sorted(found - NOT_YET) == [], "new: pass a RunEnvironment or a settings value instead"
    fixed = {p for p in NOT_YET if p.startswith("parameters ")} - found
    assert sorted(fixed) == [], "fixed: take it off NOT_YET"


def test_no_call_across_modules_passes_more_than_4_positional_arguments():
    found = call_problems()
    assert sorted(found - NOT_YET) == [], "new: pass keywords"
    fixed = {p for p in NOT_YET if p.startswith("call ")} - found
    assert sorted(fixed) == [], "fixed: take it off NOT_YET"
