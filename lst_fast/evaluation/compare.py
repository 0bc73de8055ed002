"""Finished evaluations side by side, one row per run, the way a leaderboard shows models: per paper table
a Markdown and a LaTeX table (lst_fast.evaluation.tables.side_by_side), and two figures: the Table 1
distributions per run (RMS, SSIM, final confidence over all pairs) and the Table 2 high-confidence
fractions per threshold; a third, the k-simplex fraction against k, when runs have k-simplices
(lst_fast.evaluation.simplices). `lst-fast compare` runs `write_comparison`.

Reads only what `lst-fast eval` wrote, through the one loader of a finished evaluation
(lst_fast.evaluation.finished: config.json, tables.json and the vetted chunk files); a folder that is not a
finished evaluation is refused, by name.

`pool_note` says whether the comparison is paired, from the result files themselves: the runs have the
same number of rounds, share some sources, in every round each shared source was walked toward the
same target by every run, and every run records the same digest of the pixels it walked
(OUT/provenance.json; a folder of an earlier lst_fast records none, so it is not called paired).
Otherwise it says unpaired, and what differs. A run that holds only part of the
others' sources (a later model on a shared pool) is paired on the shared ones, and the note says how many.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

from lst_fast import plots
from lst_fast.atomic_files import atomic_write_text, standard_json
from lst_fast.errors import InputError
from lst_fast.evaluation.finished import PER_PAIR, FinishedRun, default_names, load_finished_runs
from lst_fast.evaluation.simplices import fraction_by_k_figure
from lst_fast.evaluation.tables import (
    TITLES,
    differing_settings,
    side_by_side,
    side_by_side_latex,
    side_by_side_markdown,
)
from lst_fast.geometry import TRIANGLE_DROPS

__all__ = [
    "PER_PAIR",
    "distributions_figure",
    "fractions_figure",
    "pool_note",
    "row_labels",
    "write_comparison",
]


def row_labels(runs: List[FinishedRun], labels: Optional[Sequence[str]] = None) -> List[str]:
    """`labels` (one per run), or each run's model, with the folder name where models repeat."""
    if labels is not None:
        if len(labels) != len(runs):
            raise InputError(f"--labels takes one name per folder ({len(runs)}), got {len(labels)}")
        return list(labels)
    return default_names(runs)


def _targets_by_source(run: FinishedRun) -> Dict[int, Tuple[int, ...]]:
    """Each source of a run and its target in every round, from its result files."""
    walked = run.walked
    sources = walked[0][0]
    if any(src != sources for src, _ in walked):
        return {}  # rounds with other sources: no source has one target per round
    return {s: tuple(tgt[k] for _, tgt in walked) for k, s in enumerate(sources)}


def data_difference(runs: List[FinishedRun], names: List[str]) -> str:
    """Why the runs' files do not show the same data (empty when they do): each must record the digest of
    the pixels it walked (OUT/provenance.json), over the same images, and the digests must agree."""
    found = [r.provenance for r in runs]
    missing = [f"`{n}`" for n, p in zip(names, found, strict=True) if p is None]
    if missing:
        return (
            f"{', '.join(missing)} record{'s' if len(missing) == 1 else ''} no digest of the images walked (written "
            "by an earlier lst_fast), so the same data cannot be shown"
        )
    first = found[0]
    other = [
        f"`{n}` {p.pixels_sha256[:12]}"
        for n, p in zip(names[1:], found[1:], strict=True)
        if (p.pixels_sha256, p.pixel_indices) != (first.pixels_sha256, first.pixel_indices)
    ]
    if other:
        return f"they walked other pixels (data digests: `{names[0]}` {first.pixels_sha256[:12]}, {', '.join(other)})"
    return ""


def pool_note(runs: List[FinishedRun], names: List[str]) -> Dict[str, Any]:
    """{"paired": bool, "pool": digest or None, "shared_sources": int, "text": one paragraph}: whether the
    comparison is paired, read from the result files (see the module docstring), and if not, what differs."""
    pools = [r.cfg.pool for r in runs]
    digest = pools[0] if pools[0] is not None and all(p == pools[0] for p in pools) else None
    rounds = [len(r.rounds) for r in runs]
    maps = [_targets_by_source(r) for r in runs]
    shared = set(maps[0]).intersection(*maps[1:]) if all(maps) else set()
    why = ""
    if len(set(rounds)) > 1:
        why = (
            "their numbers of rounds differ ("
            + ", ".join(f"`{n}` {k}" for n, k in zip(names, rounds, strict=True))
            + ")"
        )
    elif not all(maps):
        why = "the rounds of " + ", ".join(f"`{n}`" for n, m in zip(names, maps, strict=True) if not m)
        why += " have different sources"
    elif not shared:
        why = "they share no source image"
    else:
        other = [
            f"`{n}` ({sum(m[s] != maps[0][s] for s in shared)} of {len(shared)})"
            for n, m in zip(names[1:], maps[1:], strict=True)
            if any(m[s] != maps[0][s] for s in shared)
        ]
        if other:
            why = f"on their {len(shared)} shared sources, other targets than `{names[0]}`'s: " + ", ".join(other)
    if not why:
        why = data_difference(runs, names)
    if why:
        text = (
            f"⚠ The comparison is unpaired: {why} (read from their result files). For a paired one, evaluate "
            "every model on one pool (`lst-fast leaderboard`, or `lst-fast eval --pool FILE`)."
        )
        return {"paired": False, "pool": digest, "shared_sources": len(shared), "text": text}
    sizes = [len(m) for m in maps]
    part = [f"`{n}` {k}" for n, k in zip(names, sizes, strict=True) if k > len(shared)]
    text = (
        f"Paired: the result files show the same {len(shared)} source images walked toward the same targets in "
        f"every one of the {rounds[0]} rounds by every run, on the same pixels (data digest "
        f"{runs[0].provenance.pixels_sha256[:12]})"
        + (f" (pool {digest[:12]})" if digest else "")
        + "."
        + (
            f" Some runs hold more sources ({', '.join(part)}); their table rows are over all of their own."
            if part
            else ""
        )
    )
    return {"paired": True, "pool": digest, "shared_sources": len(shared), "text": text}


def _refuse_repeats(folders: Sequence[str]) -> None:
    """InputError when one folder is given twice (also as another path to it: a run compared with itself
    would read as paired, with every difference zero)."""
    seen: Dict[str, str] = {}
    for folder in folders:
        real = os.path.realpath(folder)
        if real in seen:
            same = f"{seen[real]!r} and {str(folder)!r} are" if seen[real] != str(folder) else f"{str(folder)!r} is"
            raise InputError(f"cannot compare a run with itself: {same} the same folder ({real}); give other runs")
        seen[real] = str(folder)


def write_comparison(
    folders: Sequence[str], out, digits: int = 3, labels: Optional[Sequence[str]] = None
) -> List[Path]:
    """Write OUT/table{1,2}.{md,tex}, compare.md, compare.json and the two figures; return the paths."""
    _refuse_repeats(folders)
    runs = load_finished_runs(folders)
    names = row_labels(runs, labels)
    out = Path(out)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise InputError(f"cannot write the output folder {out}: {error.strerror or error}") from error
    written, sections = [], []
    note = pool_note(runs, names)
    for key in TITLES:
        table = side_by_side(runs, key, names, digits)
        md = side_by_side_markdown(table)
        sections.append(md)
        written.append(atomic_write_text(out / f"{key}.md", md))
        written.append(atomic_write_text(out / f"{key}.tex", side_by_side_latex(table)))
    figures = {
        "Table 1 distributions": distributions_figure(runs, names, out / "table1_distributions.png"),
        "Table 2 high-confidence fractions": fractions_figure(runs, names, out / "table2_fractions.png"),
    }
    by_k = fraction_by_k_figure(runs, names, out / "simplex_fractions.png")  # runs with k-simplices only
    if by_k is not None:
        figures["k-simplex fraction against k"] = by_k
    written += list(figures.values())
    text = [
        "# lst-fast compare",
        "",
        "Runs: " + ", ".join(f"`{n}` = {r.folder}" for n, r in zip(names, runs, strict=True)),
        "",
        note["text"],
        "",
        *sections,
    ]
    for title, path in figures.items():
        text += [f"## {title}", "", f"![{title}]({path.name})", ""]
    summary = [
        {
            "label": n,
            "folder": str(r.folder),
            "config": r.config,
            "provenance": None if r.provenance is None else r.provenance.digests(),
            "tables": r.tables,
        }
        for n, r in zip(names, runs, strict=True)
    ]
    return written + [
        atomic_write_text(out / "compare.md", "\n".join(text)),
        atomic_write_text(
            out / "compare.json",
            standard_json(
                {"runs": summary, "differing_settings": differing_settings(runs), "shared_pool": note}, indent=1
            ),
        ),
    ]


def distributions_figure(runs: List[FinishedRun], names: List[str], path: Path) -> Path:
    """Per run, the distribution over pairs of RMS to target, SSIM to target and final confidence."""
    plt = plots.pyplot()
    titles = {"rms": "RMS to target", "ssim": "SSIM to target", "confidence": "final source-class confidence"}
    fig, axes = plt.subplots(1, 3, figsize=(max(9, 1.1 * len(runs) * 3), 3.4))
    for ax, key in zip(axes, PER_PAIR, strict=True):
        values = [r.per_pair[key][~r.per_pair[key].isnan()].numpy() for r in runs]
        ax.boxplot(
            values,
            showmeans=True,
            medianprops={"color": "tab:red"},
            meanprops={"marker": "D", "markerfacecolor": "white", "markeredgecolor": "black"},
            flierprops={"marker": ".", "markersize": 3},
        )
        ax.set_xticks(range(1, len(runs) + 1))
        ax.set_xticklabels(names, rotation=20, ha="right", fontsize=8)
        ax.set_title(titles[key], fontsize=9)
        if key != "rms":
            ax.set_ylim(min(0.0, min((float(v.min()) for v in values if v.size), default=0.0)), 1.02)
    fig.suptitle("Table 1 per pair (box: quartiles, line: median, diamond: mean)", fontsize=9)
    fig.tight_layout()
    return plots.save_figure(fig, path)


def fractions_figure(runs: List[FinishedRun], names: List[str], path: Path) -> Path:
    """Per run, the fraction of the triangle grid with confidence above p_src - drop, for each drop."""
    plt = plots.pyplot()
    drops = list(TRIANGLE_DROPS)
    fig, ax = plt.subplots(figsize=(5, 3.4))
    for name, run in zip(names, runs, strict=True):
        cols = run.tables["table2"]
        mean = [cols[f"frac_above_{d:g}"][0] for d in drops]
        std = [cols[f"frac_above_{d:g}"][1] for d in drops]
        ax.errorbar(drops, mean, yerr=std, marker="o", capsize=3, label=name)
    ax.set_xticks(drops)
    ax.set_xlabel("drop d: fraction of the triangle with p > p_src - d")
    ax.set_ylabel("fraction (mean ± std over sources)")
    ax.set_ylim(0, 1.05)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    return plots.save_figure(fig, path)
