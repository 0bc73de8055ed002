"""Every walk of one run as flat rows (round, position in the round), the "most striking" order, and
which walks get a page of their own."""

from __future__ import annotations

import dataclasses
import math
from typing import List

import torch
from torch import Tensor

from lst_fast.data.image_set import ImageSet
from lst_fast.evaluation.finished import FinishedRun

__all__ = ["WalkTable", "select_walks", "walk_table"]


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


def walk_table(run: FinishedRun, data: ImageSet, batch: int = 256) -> WalkTable:
    """The rows of every walk of `run`, reading the source and target images from `data` (no model)."""
    rows = {k: [] for k in ("round", "position", "source", "target", "initial_confidence", "confidence", "rms")}
    start_rms = []
    for r, found in enumerate(run.rounds):
        n = found["source"].numel()
        rows["round"].append(torch.full((n,), r, dtype=torch.long))
        rows["position"].append(torch.arange(n))
        for key in ("source", "target", "initial_confidence", "confidence", "rms"):
            rows[key].append(found[key])
        for start in range(0, n, batch):
            src, tgt = found["source"][start : start + batch], found["target"][start : start + batch]
            diff = (data.get(src).double() - data.get(tgt).double()).flatten(1)
            start_rms.append(diff.pow(2).mean(1).sqrt())  # the RMS of lst_fast.metrics.distances
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
    rest = [i for i in range(n) if i not in set(top)]
    order = torch.randperm(len(rest), generator=torch.Generator().manual_seed(seed))
    return sorted(top + [rest[i] for i in order[: count - len(top)].tolist()])
