"""A finished evaluation as its readers see it: `load_finished(folder)` is the one loader, used by
`lst-fast compare` (lst_fast.evaluation.compare, verdict_compare) and `lst-fast site` (lst_fast.website).
It reads only what `lst-fast eval` wrote, through the evaluation's store; nothing is rerun.

A folder is refused in one line naming it when it is not there, holds no evaluation (no config.json) or is
unfinished (EvaluationStore.unfinished, the one definition of finished). Every chunk file is vetted as the
store vets one before reuse (EvaluationStore.has_chunk: its recorded configuration, round and chunk, the
weights and pixel digests it records, one row per pair, and in every round the sources of round 0 at its
position); a file that fails is one DataError naming it.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import warnings
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import torch
from torch import Tensor

from lst_fast.errors import DataError, InputError, LstFastError, MissingFile
from lst_fast.evaluation.config import EvalConfig
from lst_fast.evaluation.provenance import Provenance
from lst_fast.evaluation.store import EvaluationStore
from lst_fast.evaluation.tables import round_pairs

__all__ = ["PER_PAIR", "WALK_KEYS", "FinishedRun", "default_names", "load_finished", "load_finished_runs"]

# The per-walk tensors of a round that the readers use (the LST outputs themselves are read separately).
WALK_KEYS = (
    "source",
    "target",
    "initial_confidence",
    "confidence",
    "rms",
    "ssim",
    "linf",
    "still_source",
    "accepted_steps",
)
PER_PAIR = ("rms", "ssim", "confidence")  # the Table 1 columns whose distributions compare draws


@dataclasses.dataclass
class FinishedRun:
    """One finished evaluation: its name (on the site; "" until given), folder, configuration, tables
    (tables.json), per-round results (each round's tensors of WALK_KEYS concatenated over its chunks, in
    source order), chunks per round and provenance (OUT/provenance.json; None: an earlier lst_fast's folder)."""

    name: str
    folder: Path
    cfg: EvalConfig
    tables: Dict[str, Any]
    rounds: List[Dict[str, Tensor]]
    chunks: int
    provenance: Optional[Provenance] = None

    @property
    def store(self) -> EvaluationStore:
        return EvaluationStore(self.folder)

    @property
    def config(self) -> Dict[str, Any]:
        """The configuration with flat keys, as config.json holds it."""
        return self.cfg.to_dict()

    @functools.cached_property
    def per_pair(self) -> Dict[str, Tensor]:
        """RMS, SSIM and final confidence of every pair of every round (float64, rounds in order)."""
        return {k: torch.cat([r[k].double().flatten() for r in self.rounds]) for k in PER_PAIR}

    @property
    def walked(self) -> List[Tuple[List[int], List[int]]]:
        """Each round's (source indices, target indices), from the result files."""
        return [(r["source"].tolist(), r["target"].tolist()) for r in self.rounds]

    def triangles(self) -> Dict[Tuple[int, int], Tensor]:
        """Each pair of rounds' triangle confidences (sources, grid points), where the file is there."""
        found = {}
        for r1, r2 in round_pairs(self.cfg.rounds):
            if self.store.triangles_path(r1, r2).is_file():
                found[(r1, r2)] = self.store.read_triangles(r1, r2)
        return found

    def signature(self) -> str:
        """What a page of this run depends on: its configuration, its tables and the sizes and times of its
        result files (a recomputed file changes it)."""
        files = sorted(self.store.results.iterdir())
        stamp = [(p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in files]
        return json.dumps([self.cfg.to_dict(), self.tables, stamp], sort_keys=True)


def load_finished(folder: Union[str, Path], name: str = "") -> FinishedRun:
    """The finished evaluation in `folder` (see the module docstring for what is checked): MissingFile when
    the folder, its config.json or a result file is not there, DataError when a chunk file fails its vetting."""
    folder = Path(folder)
    if not folder.is_dir():
        what = "is not a folder" if folder.exists() else "does not exist"
        raise MissingFile(f"{folder} {what} (expected an `lst-fast eval` folder)")
    store = EvaluationStore(folder)
    if not store.config_path.is_file():
        raise MissingFile(f"{folder} is not an evaluation folder (no config.json)")
    missing = store.unfinished()
    if missing:
        raise MissingFile(f"{folder} is unfinished ({missing}): run the same `lst-fast eval` command again")
    cfg, chunks, provenance = store.read_config(), store.chunks_per_round(), store.read_provenance()
    rounds: List[Dict[str, Tensor]] = []
    for r in range(cfg.rounds):
        parts = []
        for c in range(chunks):
            found = store.read_chunk(r, c)
            if any(k not in found for k in ("source", "target")):
                raise DataError(f"{store.chunk_path(r, c)} holds no source and target indices; evaluate again")
            # the sources at this position are round 0's in every round (as the evaluation walks them)
            source = found["source"] if r == 0 else rounds[0]["source"][c * cfg.chunk_size : (c + 1) * cfg.chunk_size]
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # an unreadable file is refused here, not recomputed
                usable = store.has_chunk(r, c, cfg, source, found["target"], provenance=provenance)
            if not usable:
                raise DataError(f"{store.chunk_path(r, c)} cannot be read or records no configuration; evaluate again")
            parts.append({k: v for k, v in found.items() if k in WALK_KEYS})
        rounds.append({k: torch.cat([p[k] for p in parts]) for k in parts[0]})
    return FinishedRun(name, folder, cfg, store.read_tables(), rounds, chunks, provenance)


def load_finished_runs(folders: Sequence[Union[str, Path]]) -> List[FinishedRun]:
    """Every folder's finished evaluation, or one InputError naming every folder that is not one."""
    runs, problems = [], []
    for folder in folders:
        try:
            runs.append(load_finished(folder))
        except LstFastError as error:
            problems.append(str(error))
    if problems:
        raise InputError("cannot compare: " + "; ".join(problems))
    return runs


def default_names(runs: Sequence[FinishedRun]) -> List[str]:
    """Each run's model, with its folder's name where two runs have the same model."""
    models = [r.cfg.model for r in runs]
    return [m if models.count(m) == 1 else f"{m} ({r.folder.name})" for m, r in zip(models, runs, strict=True)]
