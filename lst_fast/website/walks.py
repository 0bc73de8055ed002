"""Every walk of one run as flat rows (round, position in the round), the "most striking" order, and
which walks get a page of their own."""

from __future__ import annotations

import dataclasses
import hashlib
import math
from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch
from torch import Tensor

from lst_fast.data.image_set import ImageSet
from lst_fast.evaluation.finished import FinishedRun
from lst_fast.stage_times import timed_stage

__all__ = ["WalkTable", "select_walks", "walk_records", "walk_table"]


@dataclasses.dataclass
class WalkTable:
    """One row per walk, in round order then source order. striking = final confidence x (1 - RMS(output,
    target) / RMS(source, target)): the share of the way to the target the walk went (in RMS), weighted
    by the source-class confidence it kept; the higher, the more striking."""

    round: Tensor
    position: Tensor
    source: Tensor  # data set index
    target: Tensor
    source_class: Tensor
    target_class: Tensor
    initial_confidence: Tensor
    confidence: Tensor
    rms: Tensor  # LST output to its target
    start_rms: Tensor  # source to target
    striking: Tensor

    def __len__(self) -> int:
        return int(self.round.numel())


def _pairs_rms(data: ImageSet, source: Tensor, target: Tensor, batch: int) -> Tensor:
    """RMS(source image, target image) of each pair, in float64 (the RMS of lst_fast.metrics.distances)."""
    found = []
    for start in range(0, source.numel(), batch):
        src, tgt = source[start : start + batch], target[start : start + batch]
        diff = (data.get(src).double() - data.get(tgt).double()).flatten(1)
        found.append(diff.pow(2).mean(1).sqrt())
    return torch.cat(found) if found else torch.zeros(0, dtype=torch.float64)


@timed_stage("walk table")
def walk_table(
    run: FinishedRun, data: ImageSet, batch: int = 256, known: Optional[Dict[Tuple, Tensor]] = None
) -> WalkTable:
    """The rows of every walk of `run`, reading the source and target images from `data` (no model).
    known: the start RMS of the rounds already computed by this build (keyed by the image set and the
    round's sources and targets), filled here, so the runs of a leaderboard, which walk the same pairs on
    the same pixels, compute them once."""
    rows = {k: [] for k in ("round", "position", "source", "target", "initial_confidence", "confidence", "rms")}
    start_rms = []
    known = {} if known is None else known
    for r, found in enumerate(run.rounds):
        n = found["source"].numel()
        rows["round"].append(torch.full((n,), r, dtype=torch.long))
        rows["position"].append(torch.arange(n))
        for key in ("source", "target", "initial_confidence", "confidence", "rms"):
            rows[key].append(found[key])
        pairs = torch.stack([found["source"], found["target"]]).to(torch.long).cpu()
        key = (id(data), batch, hashlib.sha256(pairs.numpy().tobytes()).hexdigest())
        if key not in known:
            known[key] = _pairs_rms(data, found["source"], found["target"], batch)
        start_rms.append(known[key])
    flat = {k: torch.cat(v) for k, v in rows.items()}
    begin = torch.cat(start_rms)
    fraction = 1 - flat["rms"].double() / begin.clamp_min(1e-12)
    return WalkTable(
        source_class=data.labels[flat["source"]],
        target_class=data.labels[flat["target"]],
        start_rms=begin,
        striking=flat["confidence"].double() * fraction,
        **flat,
    )


def select_walks(table: WalkTable, count: int, seed: int) -> List[int]:
    """The rows that get a page: the ceil(count / 2) most striking, then a seeded sample of the others up
    to `count` (every row when count >= the number of walks); sorted."""
    n = len(table)
    if count >= n:
        return list(range(n))
    top = torch.argsort(table.striking, descending=True, stable=True)[: math.ceil(count / 2)].tolist()
    taken = set(top)
    rest = [i for i in range(n) if i not in taken]
    order = torch.randperm(len(rest), generator=torch.Generator().manual_seed(seed))
    return sorted(top + [rest[i] for i in order[: count - len(top)].tolist()])


def walk_records(table: WalkTable, classes: Sequence[str], target_p: Tensor) -> List[Dict[str, Any]]:
    """Every walk's row as the pages show it (numbers as Python floats and ints, class names from `classes`,
    `target_p`: the source class's confidence at each walk's target), read column by column: one
    conversion per column, not per walk."""
    columns = {
        "round": table.round,
        "position": table.position,
        "source": table.source,
        "target": table.target,
        "source_class": table.source_class,
        "target_class": table.target_class,
        "p0": table.initial_confidence,
        "p": table.confidence,
        "rms": table.rms,
        "striking": table.striking,
        "pt": target_p,
    }
    values = {key: column.tolist() for key, column in columns.items()}
    for key in ("round", "position", "source", "target"):
        values[key] = [int(v) for v in values[key]]
    for key in ("p0", "p", "rms", "striking", "pt"):
        values[key] = [float(v) for v in values[key]]
    names = list(classes)
    values["source_class"] = [names[int(k)] for k in values["source_class"]]
    values["target_class"] = [names[int(k)] for k in values["target_class"]]
    values["name"] = [f"{r}-{pos}" for r, pos in zip(values["round"], values["position"], strict=True)]
    keys = list(values)
    return [dict(zip(keys, row, strict=True)) for row in zip(*values.values(), strict=True)]
