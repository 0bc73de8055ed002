"""Stand-in model zoo: a few of the real names, tiny models (see robustbench/__init__.py)."""

import torch
from torch import nn

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


class ColourNet(nn.Module):
    """Normalizes inside, as RobustBench's models do, then logits = a linear map of the channel means."""

    def __init__(self, mean=IMAGENET_MEAN, std=IMAGENET_STD, classes: int = 3):
        super().__init__()
        self.register_buffer("mu", torch.tensor(mean).reshape(1, 3, 1, 1))
        self.register_buffer("sigma", torch.tensor(std).reshape(1, 3, 1, 1))
        self.linear = nn.Linear(3, classes)

    def forward(self, x):
        return self.linear(((x - self.mu) / self.sigma).mean((2, 3)))


def _entry(preprocessing=None, **model_kwargs):
    return {"model": lambda: ColourNet(**model_kwargs), "gdrive_id": "stand-in", "preprocessing": preprocessing}


model_dicts = {
    "imagenet": {
        "Linf": {
            "Salman2020Do_R50": _entry("Res256Crop224"),
            "Singh2023Revisiting_ViT-S-ConvStem": _entry("BicubicRes256Crop224"),
            "Wong2020Fast": _entry("Crop288"),
        }
    },
    "cifar10": {
        "Linf": {
            "Standard": _entry(mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0)),
            "Wu2020Adversarial_extra": _entry(mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0)),
        }
    },
}
