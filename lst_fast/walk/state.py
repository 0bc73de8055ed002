"""The tensors one LST walk reads (`WalkConstants`) and updates in place (`WalkState`), on one batch."""

from __future__ import annotations

import dataclasses
from typing import Callable, List

from torch import Tensor

Forward = Callable[[Tensor], Tensor]  # images in [lo, hi] -> logits (normalization included)


@dataclasses.dataclass
class WalkConstants:
    """What a walk reads and never changes."""

    target: Tensor  # x_t, the target images
    label: Tensor  # c, the class whose confidence is held
    p0: Tensor  # confidence for c on the clean source (float64)

    def fields(self) -> List[Tensor]:
        return [self.target, self.label, self.p0]


@dataclasses.dataclass
class WalkState:
    """What a walk updates, in place (so a CUDA graph can replay the iteration over the same memory)."""

    x: Tensor  # the iterate
    grad: Tensor  # g, gradient of the cross-entropy for c at x
    adv: Tensor  # D, the accumulated adversarial term
    confidence: Tensor  # p at x (float64)
    accepted_steps: Tensor  # per sample

    def fields(self) -> List[Tensor]:
        return [getattr(self, f.name) for f in dataclasses.fields(self)]
