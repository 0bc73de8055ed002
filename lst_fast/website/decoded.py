"""One decoded copy of the images a site build reads, per data set and preprocessing. The build reads each
walked image many times (the walk table, the targets' confidences, the gallery, the walk pages' reruns, the
pixel digest); on image files each read is a decode, resize and crop. Here the images of every run's walks
(and the pool its provenance records) are decoded once, on every core, when the first run of that data set
and preprocessing opens it, and every later read is served from memory: the tensors decoded, unchanged.

Memory: one float32 copy of those images per preprocessing (224 px RGB: 0.6 MB an image, 600 MB for a
pool of 1,000). In-memory data sets (Fashion-MNIST, CIFAR-10, tensor:) are served as they are."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from typing import Dict, List, Optional, Sequence, Tuple

import torch
from torch import Tensor

from lst_fast.data.image_set import ImageSet
from lst_fast.data.preprocessing import Preprocessing
from lst_fast.run_environment import RunEnvironment
from lst_fast.website.encoding import usable_cores
from lst_fast.website.inputs import Run

__all__ = ["DecodedImages", "preloaded"]

DECODE_BATCH = 16  # images per task of the decoding threads


def preloaded(data: ImageSet, indices: Tensor, workers: int = 1) -> ImageSet:
    """`data` with the images at `indices` decoded now, `workers` threads at a time (Pillow's decoders and
    resizes release the GIL), and served from memory; other indices are fetched from `data` as before."""
    wanted = torch.unique(indices.to(torch.long).cpu())
    wanted = wanted[(wanted >= 0) & (wanted < len(data))]  # others fall through to `data` and its errors
    batches = list(torch.split(wanted, DECODE_BATCH))
    with ThreadPoolExecutor(max(1, workers)) as pool:
        decoded = list(pool.map(data.get, batches))
    images = torch.cat(decoded) if decoded else torch.empty(0)
    slot = torch.full((len(data),), -1, dtype=torch.long)
    slot[wanted] = torch.arange(wanted.numel())

    def fetch(index: Tensor) -> Tensor:
        where = slot[index]
        held = where >= 0
        if not wanted.numel() or not bool(held.any()):
            return data.get(index)
        if bool(held.all()):
            return images[where]  # a copy (advanced indexing): the caller may change it
        missing = data.get(index[~held])
        out = images.new_empty(index.numel(), *images.shape[1:])
        out[held], out[~held] = images[where[held]], missing
        return out

    return ImageSet(data.labels, fetch, data.name, data.class_names, in_memory=data.in_memory)


def _walked(runs: Sequence[Run]) -> Dict[str, Tensor]:
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
    """The build's image sets, opened and decoded once per (data set, preprocessing) and shared by every run
    that reads them."""

    def __init__(self, runs: Sequence[Run], env: RunEnvironment) -> None:
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
            if not data.in_memory:
                data = preloaded(data, self.walked.get(spec, torch.zeros(0, dtype=torch.long)), usable_cores())
            self._opened[key] = data
        return self._opened[key]
