"""The verdict matrices on the site (lst_fast.evaluation.verdicts): under each LST output of the side-by-side
page, what every model predicts for it; on a model's page, its row (the others on its outputs) and its
column (it on the others' outputs). Read from a leaderboard folder's files; nothing is run."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

from lst_fast.evaluation.verdict_tables import TITLES
from lst_fast.evaluation.verdicts import read_verdicts, verdict_path

__all__ = ["model_verdicts", "pair_verdicts"]


def pair_verdicts(board_folder: Path, parts: Sequence[Dict[str, Any]]) -> Optional[List[List[List[Any]]]]:
    """Per walk row of the first part's table, per model's output, per judging model: [class name, its
    confidence]; None unless every pair of models has its verdict file (a leaderboard folder that the
    verdicts were computed in)."""
    found = {}
    for a in parts:
        for b in parts:
            tensors = read_verdicts(verdict_path(Path(board_folder) / "verdicts", a["slug"], b["slug"]))
            if tensors is None or tuple(tensors["predicted"].shape) != (
                a["run"].cfg.rounds,
                len(a["run"].rounds[0]["source"]),
            ):
                return None
            found[(a["slug"], b["slug"])] = tensors
    table = parts[0]["table"]
    rows = []
    for i in range(len(table)):
        r, s = int(table.round[i]), int(table.position[i])
        rows.append(
            [
                [
                    [
                        b["classes"][int(found[(a["slug"], b["slug"])]["predicted"][r, s])],
                        round(float(found[(a["slug"], b["slug"])]["predicted_p"][r, s]), 4),
                    ]
                    for b in parts
                ]
                for a in parts
            ]
        )
    return rows


def model_verdicts(board: Optional[Dict[str, Any]], model: str) -> Optional[Dict[str, Any]]:
    """The model's row and column of every verdict matrix of the leaderboard, as text cells; None without."""
    matrix = (board or {}).get("verdicts")
    if not matrix or model not in matrix["models"]:
        return None
    k = matrix["models"].index(model)

    def text(cell: Dict[str, Any]) -> str:
        if cell.get("mean") is None or cell["mean"] != cell["mean"]:
            return "n/a"
        return f"{cell['mean']:.3f} [{cell['low']:.3f}, {cell['high']:.3f}]"

    statistics = list(matrix["cells"])
    return {
        "headers": [TITLES.get(s, s) for s in statistics],
        "row": [
            {"model": other, "cells": [text(matrix["cells"][s][k][j]) for s in statistics]}
            for j, other in enumerate(matrix["models"])
        ],
        "column": [
            {"model": other, "cells": [text(matrix["cells"][s][j][k]) for s in statistics]}
            for j, other in enumerate(matrix["models"])
        ],
    }
