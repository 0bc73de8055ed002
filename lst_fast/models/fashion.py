"""Small Fashion-MNIST classifiers shipped with lst_fast: a CNN (trained normally and adversarially)
and a Vision Transformer. Inputs are (N, 1, 28, 28) images in [0, 1]; normalization happens inside."""

from __future__ import annotations

import torch
from torch import nn

from lst_fast.walk.runtime import normalize

MEAN, STD = 0.2860, 0.3530  # Fashion-MNIST training-set statistics


class Normalize(nn.Module):
    """(x - mean) / std with per-channel (or one) mean and std, so models take images in [0, 1]."""

    def __init__(self, mean=MEAN, std=STD):
        super().__init__()
        self.register_buffer("mean", torch.as_tensor(mean, dtype=torch.float32).reshape(1, -1, 1, 1))
        self.register_buffer("std", torch.as_tensor(std, dtype=torch.float32).reshape(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return normalize(x, (self.mean, self.std))  # the one normalization, as traverse(mean=, std=) applies it


class FashionCNN(nn.Module):
    """Two conv-BN-ReLU-pool stages and a two-layer head (about 220k parameters)."""

    def __init__(self, num_classes: int = 10):
        super().__init__()
        self.normalize = Normalize()
        self.features = nn.Sequential(
            nn.Conv2d(1, 32, 3, padding=1, bias=False),
            nn.BatchNorm2d(32),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3, padding=1, bias=False),
            nn.BatchNorm2d(64),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
        )
        self.head = nn.Sequential(
            nn.Flatten(), nn.Linear(64 * 7 * 7, 64), nn.ReLU(inplace=True), nn.Linear(64, num_classes)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(self.normalize(x)))


def fashion_vit(num_classes: int = 10) -> nn.Module:
    """timm's VisionTransformer for 28x28 grey images: 4x4 patches (49 tokens), width 64, depth 4."""
    from timm.models.vision_transformer import VisionTransformer

    vit = VisionTransformer(
        img_size=28,
        patch_size=4,
        in_chans=1,
        num_classes=num_classes,
        embed_dim=64,
        depth=4,
        num_heads=4,
        mlp_ratio=2.0,
    )
    return nn.Sequential(Normalize(), vit)


ARCHITECTURES = {"fashion_cnn": FashionCNN, "fashion_vit": fashion_vit}
