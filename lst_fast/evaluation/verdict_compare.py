"""`lst-fast compare`'s verdict matrix: every run's model on every other run's LST outputs
(lst_fast.evaluation.verdicts), for paired runs only; unpaired ones get one paragraph saying why."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, Optional, Sequence, Tuple

import torch
from torch import Tensor

from lst_fast.atomic_files import atomic_write_text, standard_json
from lst_fast.data.sources import open_image_set
from lst_fast.evaluation.compare import pool_note, row_labels
from lst_fast.evaluation.finished import load_finished_runs
from lst_fast.evaluation.leaderboard import model_folder, resample_counts
from lst_fast.evaluation.verdict_tables import verdict_csv, verdict_figure, verdict_latex, verdict_markdown
from lst_fast.evaluation.verdicts import judge_outputs, verdict_matrix, verdict_path
from lst_fast.models.descriptor import ModelDescriptor

__all__ = ["compare_verdicts"]


def compare_verdicts(
    folders: Sequence[str],
    out,
    labels: Optional[Sequence[str]] = None,
    digits: int = 3,
    device="cpu",
    data_root: Optional[str] = None,
    resamples: int = 1000,
) -> Tuple[Optional[Dict[str, Any]], str]:
    """`lst-fast compare`'s verdict matrices: (the matrix, its Markdown) for paired runs, with its files
    OUT/verdicts.{md,tex,csv,json,png} and OUT/verdicts/<A>/<B>.safetensors (resumed as the leaderboard's);
    (None, one paragraph saying why not) for unpaired ones. The positions are the runs' sources (their
    union, in data set order), resampled `resamples` times with the runs' seed."""
    from lst_fast.models import resolve_model

    runs = load_finished_runs(folders)
    names = row_labels(runs, labels)
    if len(runs) < 2:
        return None, "No verdict matrix: it needs two runs or more."
    note = pool_note(runs, names)
    kinds = {r.cfg.data.partition(":")[0] for r in runs}
    if not note["paired"] or len(kinds) > 1:
        why = (
            note["text"] if not note["paired"] else f"the runs are of different data sets ({', '.join(sorted(kinds))})"
        )
        return None, (
            "No verdict matrix (each model's verdict on the others' LST outputs): it needs paired runs, the same "
            f"sources walked toward the same targets, and these are not. {why}"
        )
    out = Path(out)
    first = runs[0].config
    data_labels = open_image_set(first["data"], data_root).labels.to(torch.long)
    found: Dict[Tuple[str, str], Dict[str, Tensor]] = {}
    resolved: Dict[str, ModelDescriptor] = {}
    for a, run_a in zip(names, runs, strict=True):
        for b, run_b in zip(names, runs, strict=True):
            cfg = run_b.config
            judge = {"model": cfg["model"], "pretrained": cfg["pretrained"], "checkpoint": cfg["checkpoint"]}

            def resolve(b=b, cfg=cfg) -> ModelDescriptor:
                if b not in resolved:
                    resolved[b] = resolve_model(
                        cfg["model"], device, pretrained=cfg["pretrained"], checkpoint=cfg["checkpoint"]
                    )
                return resolved[b]

            path = verdict_path(out / "verdicts", model_folder(a), model_folder(b))
            found[(a, b)], _ = judge_outputs(run_a.folder, judge, resolve, path, labels=data_labels, device=device)
    positions = torch.unique(torch.cat([found[(a, a)]["source"] for a in names]))
    matrix = verdict_matrix(
        found, names, positions, labels=data_labels, weights=resample_counts(len(positions), resamples, first["seed"])
    )
    markdown = verdict_markdown(matrix, digits, level="#")
    atomic_write_text(out / "verdicts.md", markdown)
    atomic_write_text(out / "verdicts.tex", verdict_latex(matrix, digits))
    atomic_write_text(out / "verdicts.csv", verdict_csv(matrix))
    atomic_write_text(out / "verdicts.json", standard_json(matrix, indent=1) + "\n")
    verdict_figure(matrix, out / "verdicts.png")
    return matrix, markdown
