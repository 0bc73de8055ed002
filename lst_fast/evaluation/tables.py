"""Tables 1 and 2 (docs/ALGORITHM.md section 3): their columns and titles, the numbers from an evaluation's
results, and their text: one run's OUT/tables.md (`tables_markdown`), and several runs side by side, one
row per run, in Markdown and LaTeX (`side_by_side`, for `lst-fast compare`).

`tables` is the dict written to OUT/tables.json: {"table1": {column: (mean, std)}, "table2": {...},
"pairs": int, "sources": int}.
"""

from __future__ import annotations

import json
from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch
from torch import Tensor

from lst_fast.evaluation.config import EvalConfig
from lst_fast.geometry import per_source, triangle_statistics, triangle_weights

__all__ = [
    "TABLE1",
    "TABLE1_HEADERS",
    "TABLE2",
    "TABLE2_HEADERS",
    "TITLES",
    "differing_settings",
    "latex_text",
    "mean_std",
    "round_pairs",
    "side_by_side",
    "side_by_side_latex",
    "side_by_side_markdown",
    "summarize",
    "table1_per_pair",
    "table2_per_source",
    "tables_markdown",
]

# The columns (keys of tables.json) and how the side-by-side tables head them.
TABLE1_HEADERS = {
    "rms": "RMS",
    "linf": "l_inf",
    "l2": "l2",
    "ssim": "SSIM",
    "initial_confidence": "p0",
    "confidence": "final confidence",
    "still_source": "still source class",
}
TABLE2_HEADERS = {
    "p_source": "p at source",
    "mean": "mean p",
    "frac_above_0": "frac p > p_src",
    "frac_above_0.1": "> p_src - 0.1",
    "frac_above_0.2": "> p_src - 0.2",
    "frac_above_0.3": "> p_src - 0.3",
    "edge_mean": "edge mean",
    "edge_min_drop": "edge min (p - p_src)",
}
TABLE1 = ("l2", "rms", "linf", "ssim", "initial_confidence", "confidence", "still_source")
TABLE2 = (
    "p_source",
    "mean",
    "frac_above_0",
    "frac_above_0.1",
    "frac_above_0.2",
    "frac_above_0.3",
    "edge_mean",
    "edge_min_drop",
)
TITLES = {
    "table1": "Table 1: LST output vs its target (mean ± std over pairs)",
    "table2": "Table 2: triangles (source, two LST outputs), mean ± std over sources",
}

# The settings shown beside a run, with their short names: compare's settings column (all other config
# entries are compared too) and the leaderboard's (without data and n, which its pool fixes for every model).
SHOWN = {
    "data": "data",
    "num_samples": "n",
    "rounds": "R",
    "iterations": "T",
    "step_size": "eta",
    "threshold": "delta",
    "adv_step_size": "eps",
    "precision": "precision",
    "seed": "seed",
}
NOT_SETTINGS = ("model", "checkpoint", "pretrained")  # what a row is, not how it was measured

Tables = Dict[str, Any]  # the tables.json dict (see the module docstring)


# -- the numbers ------------------------------------------------------------------------------------------


def round_pairs(rounds: int) -> List[Tuple[int, int]]:
    """The pairs of rounds r1 < r2 whose outputs make the triangles of Table 2."""
    return [(r1, r2) for r1 in range(rounds) for r2 in range(r1 + 1, rounds)]


def table1_per_pair(per_round: Sequence[Dict[str, Tensor]]) -> Dict[str, Tensor]:
    """Table 1's columns over every pair of every round (float64, on the CPU)."""
    return {k: torch.cat([pr[k].double().cpu() for pr in per_round]) for k in TABLE1}


def table2_per_source(triangles: Sequence[Tensor], triangle_n: int, sources: int) -> Dict[str, Tensor]:
    """Table 2's columns per source: the statistics of its triangles (one (sources, points) confidence
    tensor per pair of rounds) averaged, the edge minimum as a minimum. No triangles (one round): empty."""
    if not triangles:
        return {k: torch.empty(0, dtype=torch.float64) for k in TABLE2}
    weights = triangle_weights(triangle_n)
    stats = [triangle_statistics(confidence, weights) for confidence in triangles]
    stacked = {k: torch.cat([s[k] for s in stats]) for k in stats[0]}
    return per_source(stacked, torch.arange(sources).repeat(len(stats)), sources)


def mean_std(values: Tensor) -> Tuple[float, float]:
    """(mean, std) ignoring NaNs; (nan, nan) when nothing is left, std 0 for one value."""
    values = values[~values.isnan()] if values.numel() else values
    if values.numel() == 0:
        return (float("nan"), float("nan"))
    return (float(values.mean()), float(values.std()) if values.numel() > 1 else 0.0)


def summarize(table1: Dict[str, Tensor], table2: Dict[str, Tensor], sources: int, rounds: int) -> Tables:
    """The tables.json dict: every column's (mean, std), and the numbers of pairs and sources."""
    return {
        "table1": {k: mean_std(v) for k, v in table1.items()},
        "table2": {k: mean_std(v) for k, v in table2.items()},
        "pairs": sources * rounds,
        "sources": sources,
    }


# -- one run: OUT/tables.md -----------------------------------------------------------------------------


def tables_markdown(tables: Tables, cfg: EvalConfig) -> str:
    lines = [
        f"# LST evaluation: model `{cfg.model}`, data `{cfg.data}`",
        "",
        f"{tables['sources']} sources x {cfg.rounds} rounds = {tables['pairs']} pairs; "
        f"iterations {cfg.lst.iterations}, step {cfg.lst.step_size:g}, threshold {cfg.lst.threshold:g}, "
        f"adversarial step {cfg.lst.adv_step_size:g}, seed {cfg.seed}.",
        "",
    ]
    for key, title in TITLES.items():
        cols = tables[key]
        lines += [
            f"## {title}",
            "",
            "| " + " | ".join(cols) + " |",
            "|" + "---|" * len(cols),
            "| " + " | ".join(f"{m:.4f} ± {s:.4f}" for m, s in cols.values()) + " |",
            "",
            "LaTeX:",
            "",
            "```",
            " & ".join(f"${m:.3f} \\pm {s:.3f}$" for m, s in cols.values()) + r" \\",
            "```",
            "",
        ]
    return "\n".join(lines)


# -- several runs side by side ----------------------------------------------------------------------------


def differing_settings(runs: Sequence[Any]) -> List[str]:
    """The config entries (other than which model) that differ between the runs (FinishedRun)."""
    configs = [r.config for r in runs]
    keys = sorted({k for c in configs for k in c} - set(NOT_SETTINGS))
    return [k for k in keys if len({json.dumps(c.get(k)) for c in configs}) > 1]


def side_by_side(runs: Sequence[Any], key: str, labels: Sequence[str], digits: int) -> Dict[str, Any]:
    """The cells of one paper table ("table1" or "table2"), one row per run (a FinishedRun: its flat
    config and tables.json): headers, rows of (mean, std) cells with pairs, sources and the shown
    settings (flagged where they differ), and which settings differ."""
    headers = TABLE1_HEADERS if key == "table1" else TABLE2_HEADERS
    differ = differing_settings(runs)
    rows = []
    for label, run in zip(labels, runs, strict=True):
        cols, config = run.tables[key], run.config
        # tables.json writes a value that is not a number (NaN) as null
        cells = [tuple(_number(v) for v in cols.get(name, (None, None))) for name in headers]
        settings = [(SHOWN[k], _setting(config.get(k)), k in differ) for k in SHOWN]
        rows.append(
            {
                "label": label,
                "cells": cells,
                "pairs": run.tables["pairs"],
                "sources": run.tables["sources"],
                "settings": settings,
            }
        )
    return {"title": TITLES[key], "headers": list(headers.values()), "rows": rows, "differ": differ, "digits": digits}


def _number(value: Optional[float]) -> float:
    return float("nan") if value is None else value


def side_by_side_markdown(table: Dict[str, Any]) -> str:
    d = table["digits"]
    lines = [
        f"## {table['title']}",
        "",
        "| model | " + " | ".join(table["headers"]) + " | pairs | sources | settings |",
        "|---|" + "---|" * (len(table["headers"]) + 3),
    ]
    for row in table["rows"]:
        cells = " | ".join("n/a" if m != m else f"{m:.{d}f} ± {s:.{d}f}" for m, s in row["cells"])
        settings = ", ".join(f"**{k}={v}** †" if flag else f"{k}={v}" for k, v, flag in row["settings"])
        lines.append(f"| `{row['label']}` | {cells} | {row['pairs']} | {row['sources']} | {settings} |")
    lines += ["", _note(table), ""]
    return "\n".join(lines)


def side_by_side_latex(table: Dict[str, Any]) -> str:
    """A booktabs tabular, with the title and the note as comments."""
    d = table["digits"]
    n = len(table["headers"])
    lines = [
        f"% {table['title']}",
        "% needs \\usepackage{booktabs}",
        r"\begin{tabular}{l" + "c" * n + "rrl}",
        r"\toprule",
        "model & " + " & ".join(latex_text(h) for h in table["headers"]) + r" & pairs & sources & settings \\",
        r"\midrule",
    ]
    for row in table["rows"]:
        cells = " & ".join("n/a" if m != m else f"${m:.{d}f} \\pm {s:.{d}f}$" for m, s in row["cells"])
        settings = ", ".join(
            rf"\textbf{{{latex_text(k)}={latex_text(v)}}}$^\dagger$" if flag else f"{latex_text(k)}={latex_text(v)}"
            for k, v, flag in row["settings"]
        )
        lines.append(
            rf"\texttt{{{latex_text(row['label'])}}} & {cells} & {row['pairs']} & {row['sources']} & {settings} \\"
        )
    lines += [r"\bottomrule", r"\end{tabular}", "% " + _note(table)]
    return "\n".join(lines) + "\n"


def _setting(value: Optional[object]) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def _note(table: Dict[str, Any]) -> str:
    if not table["differ"]:
        return "All runs used the same settings."
    return "† settings differ between the runs: " + ", ".join(table["differ"]) + " (compare with care)."


def latex_text(text: object) -> str:
    """Text set literally in LaTeX (its special characters escaped)."""
    text = str(text).replace("\\", "\0")
    for a, b in (("_", r"\_"), ("%", r"\%"), ("&", r"\&"), ("#", r"\#"), ("$", r"\$"), ("{", r"\{"), ("}", r"\}")):
        text = text.replace(a, b)
    return text.replace("\0", r"\textbackslash{}").replace(">", "$>$").replace("<", "$<$")
