"""An image set of the evaluation: labels in memory, images fetched by index (lst_fast.data.sources opens
them by name)."""

from __future__ import annotations

from typing import Callable, Optional, Sequence

import torch
from torch import Tensor


class ImageSet:
    """Labels (N,) in memory; images fetched by index as float32 (n, C, H, W) in [0, 1]; the class names
    where the data set has them (else None). in_memory: the images are a tensor already (no file to
    decode), which the pool's loader reads without worker processes."""

    def __init__(
        self,
        labels: Tensor,
        fetch: Callable[[Tensor], Tensor],
        name: str,
        class_names: Optional[Sequence[str]] = None,
        in_memory: bool = False,
    ):
        self.labels = labels.to(torch.long)
        self._fetch = fetch
        self.name = name
        self.class_names = None if class_names is None else tuple(class_names)
        self.in_memory = in_memory

    def __len__(self) -> int:
        return self.labels.numel()

    def get(self, index: Tensor) -> Tensor:
        return self._fetch(index.to(torch.long).cpu())
