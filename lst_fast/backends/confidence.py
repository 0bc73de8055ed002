"""The confidence LST holds: softmax(logits)[label] per row, in float64 (the walk, its observers, the
fallback operators, the geometry and the evaluation all read it from here)."""

from __future__ import annotations

import torch
from torch import Tensor


def class_probability(logits: Tensor, label: Tensor) -> Tensor:
    """softmax(logits)[label] per row, as a stable log-sum-exp in float64."""
    z = logits.to(torch.float64)
    e = (z - z.max(dim=1, keepdim=True).values).exp()
    return e.gather(1, label.reshape(-1, 1)).squeeze(1) / e.sum(1)
