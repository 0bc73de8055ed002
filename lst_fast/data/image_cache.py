"""An image set whose chosen images are fetched once and then served from memory.

The evaluation reads only its pool's images after the pool is built, and reads each of them many times:
LST reads every source and every target once per round (2 x rounds reads per image), the triangles read
every source once per pair of rounds (rounds choose 2). On image files every read is a JPEG decode, resize
and crop (bench/RESULTS.md, "Where an evaluation's time goes"); with the cache each pool image is decoded
once. The images served are the fetched tensors themselves, copied, so results do not change.
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from lst_fast.data.decoded import DecodedImageSet
from lst_fast.data.image_set import ImageSet
from lst_fast.errors import InputError, InputTypeError

__all__ = ["cached_images"]


class _Cache:
    """Fetched images of the chosen indices, by slot; a slot is filled at its image's first fetch."""

    def __init__(self, data: ImageSet, indices: Tensor) -> None:
        self.data = data
        chosen = torch.unique(indices.to(torch.long).cpu())
        if chosen.numel() and (int(chosen.min()) < 0 or int(chosen.max()) >= len(data)):
            raise InputError(
                f"indices must lie in [0, {len(data)}) for the image set {data.name}, got values in "
                f"[{int(chosen.min())}, {int(chosen.max())}]"
            )
        self.slot = torch.full((len(data),), -1, dtype=torch.long)  # data index -> slot, -1: not cached
        self.slot[chosen] = torch.arange(chosen.numel())
        self.filled = torch.zeros(chosen.numel(), dtype=torch.bool)
        self.images: Optional[Tensor] = None  # (slots, C, H, W), allocated at the first fetch

    def fetch(self, index: Tensor) -> Tensor:
        slot = self.slot[index]
        cached = slot >= 0
        if not bool(cached.any()):
            return self.data.get(index)
        missing = torch.unique(index[cached][~self.filled[slot[cached]]])
        if missing.numel():
            fetched = self.data.get(missing)
            if self.images is None:
                self.images = fetched.new_empty(self.filled.numel(), *fetched.shape[1:])
            self.images[self.slot[missing]] = fetched
            self.filled[self.slot[missing]] = True
        assert self.images is not None  # every chosen index was fetched above or before
        if bool(cached.all()):
            return self.images[slot]
        out = self.images.new_empty(index.numel(), *self.images.shape[1:])
        out[cached] = self.images[slot[cached]]
        out[~cached] = self.data.get(index[~cached])
        return out


def cached_images(data: ImageSet, indices: Tensor) -> ImageSet:
    """`data` with the images at `indices` kept in memory after their first fetch (the others are fetched
    from `data` each time, as before). Memory: one float32 copy of those images, allocated at the first
    fetch of any of them. A command's decoded copy (lst_fast.data.decoded) keeps its images already: it is
    returned as it is."""
    if isinstance(data, DecodedImageSet):
        return data
    if not isinstance(data, ImageSet):
        raise InputTypeError(f"data must be an ImageSet, got {type(data).__name__}")
    if (
        not isinstance(indices, Tensor)
        or indices.dim() != 1
        or indices.is_floating_point()
        or indices.dtype == torch.bool
    ):
        raise InputError("indices must be a 1-d integer tensor of data set indices")
    return ImageSet(data.labels, _Cache(data, indices).fetch, data.name, data.class_names)
