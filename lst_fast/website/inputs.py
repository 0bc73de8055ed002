"""What a site is built from: a finished leaderboard folder, one `lst-fast eval` folder, or several. Read
through the evaluation's own loaders (load_finished, load_pool, leaderboard.json); nothing is rerun.

Every run is a FinishedRun, read by lst_fast.evaluation.finished.load_finished, which vets every chunk file
as the store vets one before reuse (EvaluationStore.has_chunk); a leaderboard's runs must also hold the
pool's targets and pixel digest (leaderboard.pairing_problems, pixel_problems). A file that fails is refused in one line
naming it. A leaderboard.json is checked for every key the pages read before any is used (a truncated or
edited file is one DataError naming it), and a leaderboard's model with no sources has a row but no run."""

from __future__ import annotations

import math
import numbers
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch

from lst_fast.atomic_files import read_json
from lst_fast.checks import is_count
from lst_fast.errors import DataError, InputError, MissingFile
from lst_fast.evaluation.finished import FinishedRun, default_names, load_finished
from lst_fast.evaluation.leaderboard import model_folder

__all__ = ["finite", "load_inputs", "paired", "read_board"]


def _read_run(folder: Path, name: str) -> FinishedRun:
    """A folder the site was given, as a finished evaluation (lst_fast.evaluation.finished), or one line saying
    what it is instead: an unfinished leaderboard, or neither kind of folder."""
    if not (folder / "config.json").is_file():
        if (folder / "pool.json").is_file():  # a leaderboard stopped before its ranking
            raise MissingFile(
                f"{folder} is an unfinished leaderboard (no leaderboard.json yet): run the same `lst-fast "
                "leaderboard` command again to finish it"
            )
        raise MissingFile(
            f"{folder} is neither a leaderboard folder (leaderboard.json) nor an evaluation folder (config.json)"
        )
    return load_finished(folder, name)


def _check_against_pool(board_folder: Path, runs: List[FinishedRun]) -> None:
    """A leaderboard's runs must hold the pool's targets for their sources and its pixel digest."""
    from lst_fast.evaluation.leaderboard import pairing_problems, pixel_problems
    from lst_fast.evaluation.pool import load_pool

    if not (board_folder / "pool.json").is_file():
        raise DataError(f"{board_folder} is a leaderboard folder without its pool.json; run the leaderboard again")
    pool = load_pool(board_folder / "pool.json")
    for run in runs:
        problems = pairing_problems(run.rounds, pool) + pixel_problems(run.provenance, pool)
        if problems:
            raise DataError(
                f"{run.folder} is not paired with the pool {pool.digest[:12]} ({'; '.join(problems)}); delete the "
                "folder and run the leaderboard again"
            )


def load_inputs(paths: Sequence[str]) -> Tuple[List[FinishedRun], Optional[Dict[str, Any]]]:
    """(the runs, the leaderboard dict or None) of one leaderboard folder or of one or more evaluation
    folders; MissingFile / InputError naming the folder when one is neither or unfinished."""
    if not paths:
        raise InputError("give a leaderboard folder or one or more evaluation folders")
    folders = [Path(p) for p in paths]
    for folder in folders:
        if not folder.is_dir():
            raise MissingFile(f"{folder} is not a folder (expected a leaderboard or an `lst-fast eval` folder)")
    boards = [f for f in folders if (f / "leaderboard.json").is_file()]
    if boards and len(folders) > 1:
        raise InputError(f"{boards[0]} is a leaderboard folder: give it alone, not with other folders")
    if boards:
        board = read_board(boards[0] / "leaderboard.json")
        runs = []
        for row in board["rows"]:
            if row["sources"] == 0:  # not evaluated (its row's note says why): a row with no walks
                continue
            folder = boards[0] / model_folder(row["model"])
            if not (folder / "config.json").is_file():
                raise DataError(
                    f"{boards[0] / 'leaderboard.json'} ranks {row['model']}, whose folder {folder} is missing or "
                    "holds no evaluation (deleted?): run the leaderboard again to rank the models that are there"
                )
            runs.append(_read_run(folder, row["model"]))
        _check_against_pool(boards[0], runs)
        return runs, board
    runs = [_read_run(f, "") for f in folders]
    for run, name in zip(runs, default_names(runs), strict=True):  # the model's, with the folder's where they repeat
        run.name = name
    if len({r.name for r in runs}) != len(runs):
        raise InputError(f"two of the folders have the same name and model: {[str(f) for f in folders]}")
    return runs, None


def _is_number(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _board_problem(board: Any) -> Optional[str]:
    """What keeps `board` (leaderboard.json's content) from being a leaderboard the site can show, or None."""
    if not isinstance(board, dict):
        return "not a JSON object"
    kinds = {"rows": list, "columns": dict, "higher_first": dict, "rank_by": str, "pool": dict, "lpips": str}
    for key, kind in kinds.items():
        if not isinstance(board.get(key), kind):
            return f"no {key!r} ({kind.__name__})"
    if not _is_number(board.get("resamples")):
        return "no 'resamples' (a number)"
    if board["rank_by"] not in board["columns"] or set(board["higher_first"]) != set(board["columns"]):
        return "its rank_by, columns and higher_first do not agree"
    pool = board["pool"]
    for key, kind in (("data", dict), ("settings", dict), ("scan", dict), ("makers", list), ("digest", str)):
        if not isinstance(pool.get(key), kind):
            return f"no pool {key!r} ({kind.__name__})"
    if not _is_number(pool.get("size")) or "spec" not in pool["data"] or "min_confidence" not in pool["settings"]:
        return "no pool size, data spec or min_confidence"
    for k, row in enumerate(board["rows"]):
        if not isinstance(row, dict) or not isinstance(row.get("model"), str):
            return f"row {k} has no model"
        if not is_count(row.get("sources")):
            return f"row {k} ({row['model']}) has no count of sources"
        if not isinstance(row.get("config"), dict) or not isinstance(row.get("rank_label"), str):
            return f"row {k} ({row['model']}) has no config or rank label"
        if row.get("rank") is not None and not _is_number(row["rank"]):
            return f"row {k} ({row['model']}) has a rank that is not a number"
        values = row.get("values")
        for key in board["columns"]:
            cell = values.get(key) if isinstance(values, dict) else None
            if not isinstance(cell, dict) or any(
                not (cell.get(part) is None or _is_number(cell.get(part))) for part in ("mean", "low", "high")
            ):
                return f"row {k} ({row['model']}) has no cell {key!r} (mean, low, high: numbers or null)"
    if len({row["model"] for row in board["rows"]}) != len(board["rows"]):
        return "two rows have the same model"
    return None


def read_board(path: Path) -> Dict[str, Any]:
    """A leaderboard.json's content, or one DataError naming the file when it is not readable JSON
    (truncated) or lacks what the site reads."""
    board = read_json(path, "the same `lst-fast leaderboard` command")
    problem = _board_problem(board)
    if problem is not None:
        raise DataError(f"{path} is not a leaderboard written by `lst-fast leaderboard`: {problem}")
    return board


def finite(value: Any) -> bool:
    """True for a number that is neither NaN nor infinite (a cell's null is not)."""
    return _is_number(value) and math.isfinite(value)


def paired(runs: Sequence[FinishedRun]) -> Optional[str]:
    """None when every run walks the same pairs (the same source and target indices, in the same order, in
    every round, read from the result files themselves) on the same pixels (the data digest each records:
    content, not the data's path); else why not, in a few words."""
    first = runs[0]
    for run in runs[1:]:
        if run.cfg.rounds != first.cfg.rounds:
            return f"{first.name} has {first.cfg.rounds} rounds, {run.name} {run.cfg.rounds}"
        for r, (a, b) in enumerate(zip(first.rounds, run.rounds, strict=True)):
            if not torch.equal(a["source"], b["source"]):
                return f"{first.name} and {run.name} have different source images (round {r})"
            if not torch.equal(a["target"], b["target"]):
                return f"{first.name} and {run.name} have different targets (round {r})"
    for run in runs:
        if run.provenance is None:
            return f"{run.name} records no digest of its data (written by an earlier lst_fast)"
    for run in runs[1:]:
        a, b = first.provenance, run.provenance
        assert a is not None and b is not None
        if (a.pixels_sha256, a.pixel_indices) != (b.pixels_sha256, b.pixel_indices):
            return (
                f"{first.name} and {run.name} walked other pixels (data digests {a.pixels_sha256[:12]}, "
                f"{b.pixels_sha256[:12]})"
            )
    return None
