"""Stand-in image classifiers whose forward costs next to nothing: the class of an image is its dominant
colour channel (0 red, 1 green, 2 blue), read from the mean of each channel. Used by py:FILE:build(...) in
the decode-count tests and the ImageNet-size rehearsal (bench/test_paper_scale.py), whose images are
drawn so (`colour_images`)."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn


class ColourClassifier(nn.Module):
    def __init__(self, size: int, sharpness: float) -> None:
        super().__init__()
        self.sharpness = sharpness
        self.lst_input_size = (3, size, size)  # the resize and crop of image files (lst_fast.models.factory)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        means = x.mean(dim=(2, 3))
        return self.sharpness * (means - means.mean(1, keepdim=True))


def build(size: int = 32, sharpness: float = 20.0) -> nn.Module:
    return ColourClassifier(size, sharpness)


def colour_images(root: Path, count: int, width: int, height: int, seed: int = 0) -> Path:
    """`count` JPEG files in class folders red/green/blue (in turn), each its class's colour plus noise."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    for i in range(count):
        k = i % 3
        base = np.full((height, width, 3), 60.0)
        base[..., k] = 190.0
        pixels = base + rng.normal(0, 25, (height, width, 3))
        folder = Path(root) / ("0_red", "1_green", "2_blue")[k]
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(pixels.clip(0, 255).astype(np.uint8)).save(folder / f"{i:05d}.jpg", quality=90)
    return Path(root)
