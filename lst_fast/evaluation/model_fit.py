"""Whether a model's outputs fit a data set: checked on every batch the pool's scan and `classify` send
through a model (the first batch is the first thing an evaluation or a leaderboard computes), so a model
that does not fit its data is refused in one line naming both, before any long work, and not reported as
an index error inside lst_fast.

A model fits when it returns one tensor of floating-point logits (N, classes) for a batch of N images and
its classes cover every label of the data set (not only the batch's: a model with 5 outputs on a 10-class
data set is refused even when the first batch holds only labels below 5).
"""

from __future__ import annotations

from typing import Any

from torch import Tensor

from lst_fast.errors import DataError

__all__ = ["check_model_fits_data"]


def check_model_fits_data(logits: Any, images: int, labels: Tensor, model: str, data: str) -> Tensor:
    """`logits` (the output of `model` on a batch of `images` images of `data`, whose labels are `labels`,
    the whole data set's) once it fits: else DataError naming the model, the data set and what differs."""
    expected = f"logits of shape ({images}, classes)"
    if not isinstance(logits, Tensor):
        raise DataError(
            f"the model {model} returns a {type(logits).__name__} on images of {data}, not one tensor of "
            f"{expected}; return the logits alone"
        )
    if logits.dim() != 2 or logits.shape[0] != images:
        raise DataError(
            f"the model {model} returns outputs of shape {tuple(logits.shape)} on a batch of {images} images of "
            f"{data}; expected {expected}"
        )
    if not logits.is_floating_point():
        raise DataError(f"the model {model} returns {logits.dtype} outputs on images of {data}; expected {expected}")
    classes = int(logits.shape[1])
    if labels.numel():
        low, high = int(labels.min()), int(labels.max())
        if low < 0 or high >= classes:
            raise DataError(
                f"the model {model} has {classes} classes (its logits are ({images}, {classes})) but {data} has "
                f"labels in [{low}, {high}]: the model does not fit this data set (another model, or a data set "
                "of its classes)"
            )
    return logits
