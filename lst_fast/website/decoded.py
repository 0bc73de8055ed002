"""The images a site build reads, opened once per data set and preprocessing in the command's decoding scope
(lst_fast.data.decoded): the build reads each walked image many times (the walk table, the targets'
confidences, the gallery, the walk pages' reruns, the pixel digest); on image files each read would be a
decode, resize and crop. Here the images of every run's walks (and the pool its provenance records) are
decoded once, on every core, when the first run of that data set and preprocessing opens it, and held in the
scope's one copy (its memory budget and warning apply), which every later read is served from."""

from __future__ import annotations

import json
from typing import Dict, List, Optional, Sequence, Tuple

import torch
from torch import Tensor

from lst_fast.data.decoded import DecodedImageSet
from lst_fast.data.image_set import ImageSet
from lst_fast.data.preprocessing import Preprocessing
from lst_fast.evaluation.finished import FinishedRun
from lst_fast.run_environment import RunEnvironment
from lst_fast.website.encoding import usable_cores

__all__ = ["DecodedImages"]


def _walked(runs: Sequence[FinishedRun]) -> Dict[str, Tensor]:
    """Per data set (its --data), the indices the site reads: every walk's source and target and the pixel
    indices each run's provenance records (its digest's images)."""
    found: Dict[str, List[Tensor]] = {}
    for run in runs:
        parts = found.setdefault(run.cfg.data, [])
        parts += [r[k].to(torch.long) for r in run.rounds for k in ("source", "target")]
        if run.provenance is not None:
            parts.append(torch.tensor(run.provenance.pixel_indices, dtype=torch.long))
    return {spec: torch.unique(torch.cat(parts)) for spec, parts in found.items() if parts}


class DecodedImages:
    """The build's image sets, opened once per (data set, preprocessing), their walked images decoded up
    front, shared by every run that reads them. Call inside a decoding scope (build_site runs in one)."""

    def __init__(self, runs: Sequence[FinishedRun], env: RunEnvironment) -> None:
        self.env = env
        self.walked = _walked(runs)
        self._opened: Dict[Tuple[str, str], ImageSet] = {}
        self.start_rms: Dict[Tuple, Tensor] = {}  # walks.walk_table's, shared by runs walking the same pairs

    def open(self, spec: str, preprocessing: Optional[Preprocessing]) -> ImageSet:
        """The image set `spec` resized and cropped by `preprocessing`, its walked images decoded once."""
        from lst_fast.data.sources import open_image_set

        key = (spec, json.dumps(preprocessing.to_dict() if preprocessing is not None else None))
        if key not in self._opened:
            data = open_image_set(spec, self.env.data_root, preprocessing)
            if isinstance(data, DecodedImageSet):  # image files: decode what the pages read, on every core
                data.warm(self.walked.get(spec, torch.zeros(0, dtype=torch.long)), usable_cores())
            self._opened[key] = data
        return self._opened[key]
