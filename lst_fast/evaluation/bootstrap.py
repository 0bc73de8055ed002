"""The bootstrap over source images, written once: seeded resample counts and the resampled means of rows
with missing values. The leaderboard's columns and ranks and the verdict matrices read the same formula,
so a verdict matrix's diagonal equals the leaderboard's "still source" cell to the bit."""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["bootstrap_means", "resample_counts"]


def resample_counts(positions: int, resamples: int, seed: int) -> Tensor:
    """(resamples, positions) counts of `resamples` seeded bootstrap resamples of the positions."""
    generator = torch.Generator().manual_seed(seed)
    index = torch.randint(positions, (resamples, positions), generator=generator)
    return torch.zeros(resamples, positions, dtype=torch.float64).scatter_add_(
        1, index, torch.ones(resamples, positions, dtype=torch.float64)
    )


def bootstrap_means(values: Tensor, weights: Tensor) -> Tensor:
    """(B, M) means of M rows of values (M, P; NaN where a row has no value) under B resamples given as
    counts (B, P): resample b's mean of row m is sum(w * v) / sum(w) over the positions it has."""
    present = (~values.isnan()).double()
    filled = torch.nan_to_num(values.double(), nan=0.0)
    return (weights @ (filled * present).T) / (weights @ present.T)
