"""Finished evaluations side by side (what `lst-fast compare DIR...` calls), one row per run, the way a
leaderboard shows models: per paper table a Markdown and a LaTeX table (mean ± std, pairs and sources, the settings,
settings that differ between the runs flagged), and two figures: the Table 1 distributions per run (RMS,
SSIM, final confidence over all pairs) and the Table 2 high-confidence fractions per threshold.

Reads only what `lst-fast eval` wrote: config.json, tables.json and the per-pair chunk files (through
load_evaluation); unfinished folders are refused, by name.
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Dict, List, Sequence

TABLE1_HEADERS = {"rms": "RMS", "linf": "l_inf", "l2": "l2", "ssim": "SSIM", "initial_confidence": "p0",
                  "confidence": "final confidence", "still_source": "still source class"}
TABLE2_HEADERS = {"p_source": "p at source", "mean": "mean p", "frac_above_0": "frac p > p_src",
                  "frac_above_0.1": "> p_src - 0.1", "frac_above_0.2": "> p_src - 0.2",
                  "frac_above_0.3": "> p_src - 0.3", "edge_mean": "edge mean", "edge_min_drop": "edge min (p - p_src)"}
TITLES = {"table1": "Table 1: LST output vs its target (mean ± std over pairs)",
          "table2": "Table 2: triangles (source, two LST outputs), mean ± std over sources"}
# Settings shown in the tables' settings column (all other config entries are compared too).
SHOWN = {"data": "data", "num_samples": "n", "rounds": "rounds", "iterations": "T", "step_size": "eta",
         "threshold": "delta", "adv_step_size": "eps", "precision": "precision", "seed": "seed"}
NOT_SETTINGS = ("model", "checkpoint", "pretrained")  # what a row is, not how it was measured
PER_PAIR = ("rms", "ssim", "confidence")


def load_evaluation(folder) -> dict:
    """One finished evaluation: its config (flat keys), its tables and the per-pair values of RMS, SSIM and
    final confidence, read through the evaluation store; ValueError when the folder is not a finished
    evaluation."""
    import torch

    from lst_fast.store import EvaluationStore

    folder = Path(folder)
    if not folder.is_dir():
        raise ValueError(f"{folder} does not exist")
    store = EvaluationStore(folder)
    if not store.config_path.is_file():
        raise ValueError(f"{folder} is not an evaluation folder (no config.json)")
    config = store.read_config().to_dict()
    if not store.tables_json.is_file():
        raise ValueError(f"{folder} is unfinished (no tables.json)")
    tables = json.loads(store.tables_json.read_text())
    chunks = math.ceil(int(tables["sources"]) / int(config["chunk_size"]))
    rounds = range(int(config["rounds"]))
    paths = [store.chunk_path(r, c) for r in rounds for c in range(chunks)]
    missing = [path.name for path in paths if not path.is_file()]
    if missing:
        raise ValueError(f"{folder} is unfinished ({len(missing)} result files missing, e.g. {missing[0]})")
    parts = [store.read_round(r, chunks) for r in rounds]
    per_pair = {k: torch.cat([p[k].double().flatten() for p in parts]) for k in PER_PAIR}
    return {"folder": str(folder), "config": config, "tables": tables, "per_pair": per_pair}


def load_all(folders: Sequence[str]) -> List[dict]:
    """Every folder, or one ValueError naming all the folders that are not finished evaluations."""
    runs, problems = [], []
    for folder in folders:
        try:
            runs.append(load_evaluation(folder))
        except ValueError as error:
            problems.append(str(error))
    if problems:
        raise ValueError("cannot compare: " + "; ".join(problems))
    return runs


def row_labels(runs: List[dict], labels=None) -> List[str]:
    if labels is not None:
        if len(labels) != len(runs):
            raise ValueError(f"--labels takes one name per folder ({len(runs)}), got {len(labels)}")
        return list(labels)
    models = [r["config"].get("model", "?") for r in runs]
    return [m if models.count(m) == 1 else f"{m} ({Path(r['folder']).name})" for m, r in zip(models, runs)]


def differing_settings(runs: List[dict]) -> List[str]:
    keys = sorted({k for r in runs for k in r["config"]} - set(NOT_SETTINGS))
    return [k for k in keys if len({json.dumps(r["config"].get(k)) for r in runs}) > 1]


def _setting(value) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def table_rows(runs: List[dict], key: str, labels: List[str], digits: int) -> Dict[str, object]:
    """The cells of one paper table: header and rows of strings, plus which settings differ."""
    headers = TABLE1_HEADERS if key == "table1" else TABLE2_HEADERS
    differ = differing_settings(runs)
    rows = []
    for label, run in zip(labels, runs):
        cols = run["tables"][key]
        cells = []
        for name in headers:
            m, s = cols.get(name, (float("nan"), float("nan")))
            cells.append((m, s))
        settings = [(SHOWN[k], _setting(run["config"].get(k)), k in differ) for k in SHOWN]
        rows.append({"label": label, "cells": cells, "pairs": run["tables"]["pairs"],
                     "sources": run["tables"]["sources"], "settings": settings})
    return {"headers": list(headers.values()), "rows": rows, "differ": differ, "digits": digits}


def markdown(table: Dict[str, object], title: str) -> str:
    d = table["digits"]
    lines = [f"## {title}", "",
             "| model | " + " | ".join(table["headers"]) + " | pairs | sources | settings |",
             "|---|" + "---|" * (len(table["headers"]) + 3)]
    for row in table["rows"]:
        cells = " | ".join("n/a" if m != m else f"{m:.{d}f} ± {s:.{d}f}" for m, s in row["cells"])
        settings = ", ".join(f"**{k}={v}** †" if flag else f"{k}={v}" for k, v, flag in row["settings"])
        lines.append(f"| `{row['label']}` | {cells} | {row['pairs']} | {row['sources']} | {settings} |")
    lines += ["", _note(table), ""]
    return "\n".join(lines)


def _note(table) -> str:
    if not table["differ"]:
        return "All runs used the same settings."
    return "† settings differ between the runs: " + ", ".join(table["differ"]) + " (compare with care)."


def _tex(text: str) -> str:
    text = str(text).replace("\\", "\0")
    for a, b in (("_", r"\_"), ("%", r"\%"), ("&", r"\&"), ("#", r"\#"), ("$", r"\$"), ("{", r"\{"), ("}", r"\}")):
        text = text.replace(a, b)
    return text.replace("\0", r"\textbackslash{}").replace(">", "$>$").replace("<", "$<$")


def latex(table: Dict[str, object], title: str) -> str:
    d = table["digits"]
    n = len(table["headers"])
    lines = [f"% {title}", "% needs \\usepackage{booktabs}", r"\begin{tabular}{l" + "c" * n + "rrl}", r"\toprule",
             "model & " + " & ".join(_tex(h) for h in table["headers"]) + r" & pairs & sources & settings \\",
             r"\midrule"]
    for row in table["rows"]:
        cells = " & ".join("n/a" if m != m else f"${m:.{d}f} \\pm {s:.{d}f}$" for m, s in row["cells"])
        settings = ", ".join(rf"\textbf{{{_tex(k)}={_tex(v)}}}$^\dagger$" if flag else f"{_tex(k)}={_tex(v)}"
                             for k, v, flag in row["settings"])
        lines.append(rf"\texttt{{{_tex(row['label'])}}} & {cells} & {row['pairs']} & {row['sources']} & {settings} \\")
    lines += [r"\bottomrule", r"\end{tabular}", "% " + _note(table)]
    return "\n".join(lines) + "\n"


def write_comparison(folders: Sequence[str], out, digits: int = 3, labels=None) -> List[Path]:
    """Write OUT/table{1,2}.{md,tex}, compare.md, compare.json and the two figures; return the paths."""
    runs = load_all(folders)
    names = row_labels(runs, labels)
    out = Path(out)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise ValueError(f"cannot write the output folder {out}: {error.strerror or error}") from error
    written, sections = [], []
    for key in ("table1", "table2"):
        table = table_rows(runs, key, names, digits)
        md = markdown(table, TITLES[key])
        sections.append(md)
        for suffix, text in ((".md", md), (".tex", latex(table, TITLES[key]))):
            path = out / f"{key}{suffix}"
            path.write_text(text)
            written.append(path)
    figures = {"Table 1 distributions": distributions_figure(runs, names, out / "table1_distributions.png"),
               "Table 2 high-confidence fractions": fractions_figure(runs, names, out / "table2_fractions.png")}
    written += list(figures.values())
    text = ["# lst-fast compare", "", "Runs: " + ", ".join(f"`{n}` = {r['folder']}" for n, r in zip(names, runs)), "",
            *sections]
    for title, path in figures.items():
        text += [f"## {title}", "", f"![{title}]({path.name})", ""]
    (out / "compare.md").write_text("\n".join(text))
    summary = [{"label": n, "folder": r["folder"], "config": r["config"], "tables": r["tables"]}
               for n, r in zip(names, runs)]
    (out / "compare.json").write_text(json.dumps({"runs": summary, "differing_settings": differing_settings(runs)},
                                                 indent=1))
    return written + [out / "compare.md", out / "compare.json"]


def distributions_figure(runs: List[dict], names: List[str], path: Path) -> Path:
    """Per run, the distribution over pairs of RMS to target, SSIM to target and final confidence."""
    from lst_fast.plots import _pyplot

    plt = _pyplot()
    titles = {"rms": "RMS to target", "ssim": "SSIM to target", "confidence": "final source-class confidence"}
    fig, axes = plt.subplots(1, 3, figsize=(max(9, 1.1 * len(runs) * 3), 3.4))
    for ax, key in zip(axes, PER_PAIR):
        values = [r["per_pair"][key][~r["per_pair"][key].isnan()].numpy() for r in runs]
        ax.boxplot(values, showmeans=True, medianprops={"color": "tab:red"},
                   meanprops={"marker": "D", "markerfacecolor": "white", "markeredgecolor": "black"},
                   flierprops={"marker": ".", "markersize": 3})
        ax.set_xticks(range(1, len(runs) + 1))
        ax.set_xticklabels(names, rotation=20, ha="right", fontsize=8)
        ax.set_title(titles[key], fontsize=9)
        if key != "rms":
            ax.set_ylim(min(0.0, min((float(v.min()) for v in values if v.size), default=0.0)), 1.02)
    fig.suptitle("Table 1 per pair (box: quartiles, line: median, diamond: mean)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def fractions_figure(runs: List[dict], names: List[str], path: Path) -> Path:
    """Per run, the fraction of the triangle grid with confidence above p_src - drop, for each drop."""
    from lst_fast.plots import _pyplot

    plt = _pyplot()
    drops = [0.0, 0.1, 0.2, 0.3]
    fig, ax = plt.subplots(figsize=(5, 3.4))
    for name, run in zip(names, runs):
        cols = run["tables"]["table2"]
        mean = [cols[f"frac_above_{d:g}"][0] for d in drops]
        std = [cols[f"frac_above_{d:g}"][1] for d in drops]
        ax.errorbar(drops, mean, yerr=std, marker="o", capsize=3, label=name)
    ax.set_xticks(drops)
    ax.set_xlabel("drop d: fraction of the triangle with p > p_src - d")
    ax.set_ylabel("fraction (mean ± std over sources)")
    ax.set_ylim(0, 1.05)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
