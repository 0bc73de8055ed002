"""The verdict matrices (lst_fast.evaluation.verdicts) as text and figure: Markdown, LaTeX (booktabs), CSV and
a heatmap, each from the "verdicts" entry of leaderboard.json (or of compare's verdicts.json)."""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any, Dict, List

from lst_fast import plots
from lst_fast.evaluation.tables import latex_text

__all__ = ["verdict_caption", "verdict_csv", "verdict_figure", "verdict_latex", "verdict_markdown"]

TITLES = {
    "source": "says the source class (a shared blind spot)",
    "target": "says the target class (sees the target)",
    "other": "says another class",
    "source_p": "mean confidence in the source class",
}


def _known(cell: Dict[str, Any]) -> bool:
    return cell.get("mean") is not None and cell["mean"] == cell["mean"]


def _text(cell: Dict[str, Any], digits: int) -> str:
    if not _known(cell):
        return "n/a"
    return f"{cell['mean']:.{digits}f} [{cell['low']:.{digits}f}, {cell['high']:.{digits}f}]"


def verdict_caption(matrix: Dict[str, Any]) -> str:
    """What the matrices are, and where a pair is over fewer sources than its row's model has."""
    models, sources, shared = matrix["models"], matrix["sources"], matrix["shared"]
    fewer = [
        f"`{a}` by `{b}` {shared[i][j]} of {sources[i]}"
        for i, a in enumerate(models)
        for j, b in enumerate(models)
        if sources[i] and shared[i][j] < sources[i]
    ]
    missing = [f"`{m}`" for m, n in zip(models, sources, strict=True) if not n]
    return (
        "Whose blind spot is it? Row A, column B: model B's verdict on model A's LST outputs (B reads each "
        "output with its own normalization and input size; every output of A, averaged over each source's "
        "rounds, then over the sources both A and B have). The diagonal is each model on its own outputs: its "
        "'still source' column. Cells: mean [95% bootstrap interval over the sources, "
        f"{matrix['resamples']} resamples, the same as the other columns]. Difference: B's cell minus A's "
        "diagonal cell on the same sources (paired; an interval that excludes 0 is a real difference)."
        + (" Pairs on fewer sources than their row's model has: " + ", ".join(fewer) + "." if fewer else "")
        + (" No outputs (n/a): " + ", ".join(missing) + "." if missing else "")
    )


def _grid(matrix: Dict[str, Any], key: str, digits: int, difference: bool = False) -> List[List[str]]:
    cells = matrix["cells"][key]
    return [[_text(c["difference"] if difference else c, digits) for c in row] for row in cells]


def _sections(matrix: Dict[str, Any]):
    for key in matrix["cells"]:
        yield key, f"{TITLES.get(key, key)}", False
    yield "source", "says the source class, minus the row model's own (its diagonal)", True


def verdict_markdown(matrix: Dict[str, Any], digits: int = 3, level: str = "##") -> str:
    models = matrix["models"]
    lines = [
        f"{level} Whose blind spot? Every model's verdict on every model's LST outputs",
        "",
        verdict_caption(matrix),
    ]
    for key, title, difference in _sections(matrix):
        lines += ["", f"**{title}**", "", "| outputs of \\ verdict of | " + " | ".join(f"`{m}`" for m in models) + " |"]
        lines.append("|---|" + "---|" * len(models))
        for model, row in zip(models, _grid(matrix, key, digits, difference), strict=True):
            lines.append(f"| `{model}` | " + " | ".join(row) + " |")
    return "\n".join(lines) + "\n"


def verdict_latex(matrix: Dict[str, Any], digits: int = 3) -> str:
    models = matrix["models"]
    lines = ["% " + verdict_caption(matrix)]
    for key, title, difference in _sections(matrix):
        lines += [
            f"% {title}",
            r"\begin{tabular}{l" + "c" * len(models) + "}",
            r"\toprule",
            r"outputs of $\backslash$ verdict of & "
            + " & ".join(rf"\texttt{{{latex_text(m)}}}" for m in models)
            + r" \\",
            r"\midrule",
        ]
        for model, row in zip(models, _grid(matrix, key, digits, difference), strict=True):
            lines.append(rf"\texttt{{{latex_text(model)}}} & " + " & ".join(latex_text(c) for c in row) + r" \\")
        lines += [r"\bottomrule", r"\end{tabular}", ""]
    return "\n".join(lines)


def verdict_csv(matrix: Dict[str, Any]) -> str:
    """One line per (outputs of, verdict of, statistic): the cell, its interval and its difference to the
    row's diagonal, with the number of sources it is over."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(
        ["outputs_of", "verdict_of", "statistic", "sources", "mean", "low", "high"]
        + ["difference_mean", "difference_low", "difference_high"]
    )
    for key, rows in matrix["cells"].items():
        for i, a in enumerate(matrix["models"]):
            for j, b in enumerate(matrix["models"]):
                cell = rows[i][j]
                values = [cell[p] for p in ("mean", "low", "high")]
                values += [cell["difference"][p] for p in ("mean", "low", "high")]
                writer.writerow([a, b, key, matrix["shared"][i][j]] + ["" if v is None else repr(v) for v in values])
    return buffer.getvalue()


def verdict_figure(matrix: Dict[str, Any], path: Path, title: str = "") -> Path:
    """One heatmap per statistic (two by two): rows whose outputs, columns whose verdict, each cell its mean
    and its 95% interval."""
    plt = plots.pyplot()
    models, keys = matrix["models"], list(matrix["cells"])
    size = max(2.8, 1.25 * len(models) + 1.0)
    columns = 2 if len(keys) > 1 else 1
    lines = (len(keys) + columns - 1) // columns
    fig, axes = plt.subplots(lines, columns, figsize=(columns * size + 1.2, lines * size + 0.6), squeeze=False)
    image = None
    for n, ax in enumerate(axes.flat):
        if n >= len(keys):
            ax.axis("off")
            continue
        key = keys[n]
        cells = matrix["cells"][key]
        grid = [[c["mean"] if _known(c) else float("nan") for c in row] for row in cells]
        image = ax.imshow(grid, vmin=0.0, vmax=1.0, cmap="viridis")
        for i, row in enumerate(cells):
            for j, cell in enumerate(row):
                text = f"{cell['mean']:.3f}\n[{cell['low']:.3f}, {cell['high']:.3f}]" if _known(cell) else "n/a"
                dark = _known(cell) and cell["mean"] < 0.6
                ax.text(j, i, text, ha="center", va="center", fontsize=7, color="white" if dark else "black")
        ax.set_xticks(range(len(models)))
        ax.set_xticklabels(models, fontsize=8)
        ax.set_yticks(range(len(models)))
        ax.set_yticklabels(models, fontsize=8, rotation=90, va="center")
        ax.set_xlabel("verdict of", fontsize=8)
        ax.set_ylabel("LST outputs of", fontsize=8)
        ax.set_title(TITLES.get(key, key), fontsize=8)
    fig.suptitle(
        title or "every model's verdict on every model's LST outputs (mean, 95% bootstrap interval)", fontsize=9
    )
    fig.tight_layout(rect=(0, 0, 0.9, 1))
    if image is not None:
        fig.colorbar(image, cax=fig.add_axes((0.92, 0.15, 0.02, 0.7)))
    return plots.save_figure(fig, path)
