"""Models by name. The shipped Fashion-MNIST models load offline, weights only, from safetensors:

    cnn         FashionCNN, normal training
    cnn-robust  the same CNN, PGD adversarial training (l_inf eps 0.1)
    vit         a small timm VisionTransformer (4x4 patches)
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Dict, Union

import torch
from torch import nn

from lst_fast.models.fashion import ARCHITECTURES

ASSETS = Path(__file__).resolve().parent.parent / "assets"
SHIPPED: Dict[str, str] = {
    "cnn": "fashion_cnn.safetensors",
    "cnn-robust": "fashion_cnn_robust.safetensors",
    "vit": "fashion_vit.safetensors",
}


def shipped_path(name: str) -> Path:
    if name not in SHIPPED:
        raise ValueError(f"unknown model {name!r}; the shipped models are {sorted(SHIPPED)}")
    return ASSETS / SHIPPED[name]


def model_info(name: str) -> dict:
    """Metadata stored with a shipped model: architecture, accuracy, the command that trained it."""
    from safetensors import safe_open

    path = shipped_path(name)
    try:
        with safe_open(str(path), framework="pt") as f:
            return json.loads((f.metadata() or {})["lst_fast_model"])
    except FileNotFoundError:
        raise FileNotFoundError(f"the weights of {name!r} are missing: {path}") from None
    except Exception as error:
        raise ValueError(f"{path} is not a readable lst_fast model file: {error}") from error


def load_checkpoint(architecture: str, path: Union[str, Path]) -> nn.Module:
    """Build `architecture` and load weights from a safetensors file (no pickle), in eval mode."""
    from safetensors.torch import load_file

    if architecture not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {architecture!r}; known: {sorted(ARCHITECTURES)}")
    try:
        state = load_file(str(path))
    except FileNotFoundError:
        raise FileNotFoundError(f"no checkpoint at {path}") from None
    except Exception as error:
        raise ValueError(f"{path} is not a readable safetensors checkpoint (truncated or corrupt?): {error}") from error
    model = ARCHITECTURES[architecture]()
    model.load_state_dict(state, strict=True)
    return model.eval()


def load_model(name: str, device: Union[str, torch.device] = "cpu") -> nn.Module:
    """A shipped model by name, in eval mode, on `device`."""
    info = model_info(name)
    return load_checkpoint(info["architecture"], shipped_path(name)).to(device)
