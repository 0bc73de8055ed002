"""Models by name, all taking images in [0, 1] (normalization inside). The shipped Fashion-MNIST models
load offline, weights only, from safetensors:

    cnn         FashionCNN, normal training
    cnn-robust  the same CNN, PGD adversarial training (l_inf eps 0.1)
    vit         a small timm VisionTransformer (4x4 patches)

resolve_model also takes timm:NAME and torchvision:NAME (pretrained weights from the network unless
pretrained=False), and an architecture (fashion_cnn, fashion_vit, wrn28_10: CIFAR-10's WRN-28-10) with
weights from a file (safetensors, or a torch file read with weights_only=True). A shipped name with a
checkpoint (`--model cnn --checkpoint f.pt`) means its architecture with the checkpoint's weights.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Dict, Optional, Union

import torch
from torch import nn

from lst_fast.models.fashion import ARCHITECTURES as _FASHION_ARCHITECTURES
from lst_fast.models.wide_resnet import wrn28_10

# Architectures by name, for weights from a checkpoint file.
ARCHITECTURES = {**_FASHION_ARCHITECTURES, "wrn28_10": wrn28_10}

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


def _read_state_dict(path: Union[str, Path]) -> Dict[str, torch.Tensor]:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(path))
        state = torch.load(str(path), map_location="cpu", weights_only=True)  # never unpickles code
    except Exception as error:
        raise ValueError(f"{path} is not a readable checkpoint (truncated or corrupt?): {error}") from error
    if isinstance(state, dict) and "state_dict" in state:
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise ValueError(f"{path} does not hold a state dict")
    return state


def resolve_model(spec: str, device: Union[str, torch.device] = "cpu", pretrained: bool = True,
                  checkpoint: Optional[Union[str, Path]] = None) -> nn.Module:
    """A model by name (see the module docstring), in eval mode, normalizing inside."""
    from lst_fast.models.fashion import Normalize

    if spec in SHIPPED and checkpoint is None:
        return load_model(spec, device)
    kind, _, name = spec.partition(":")
    mean = std = None
    if spec in SHIPPED:  # with a checkpoint: the shipped model's architecture, the checkpoint's weights
        net = ARCHITECTURES[model_info(spec)["architecture"]]()
    elif spec in ARCHITECTURES:
        net = ARCHITECTURES[spec]()
        if checkpoint is None:
            raise ValueError(f"architecture {spec!r} needs a checkpoint; the shipped models are {sorted(SHIPPED)}")
    elif kind == "timm" and name:
        import timm

        try:
            net = timm.create_model(name, pretrained=pretrained and checkpoint is None)
        except Exception as error:
            raise RuntimeError(f"could not create timm model {name!r} ({error}); pretrained weights come from "
                               "the network (or its cache): pass pretrained=False / --no-pretrained or a checkpoint") from error
        cfg = getattr(net, "pretrained_cfg", {}) or {}
        mean, std = cfg.get("mean"), cfg.get("std")
    elif kind == "torchvision" and name:
        import torchvision

        try:
            net = torchvision.models.get_model(name, weights="DEFAULT" if pretrained and checkpoint is None else None)
        except Exception as error:
            raise RuntimeError(f"could not create torchvision model {name!r} ({error}); pretrained weights come "
                               "from the network: pass pretrained=False / --no-pretrained or a checkpoint") from error
        mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)  # torchvision's ImageNet weights
    else:
        raise ValueError(f"unknown model {spec!r}: a shipped name {sorted(SHIPPED)}, an architecture "
                         f"{sorted(ARCHITECTURES)} with a checkpoint, timm:NAME or torchvision:NAME")
    if checkpoint is not None:
        try:
            net.load_state_dict(_read_state_dict(checkpoint), strict=True)
        except RuntimeError as error:
            raise ValueError(f"{checkpoint} does not fit {spec}: {error}") from error
    model = nn.Sequential(Normalize(mean, std), net) if mean is not None and std is not None else net
    return model.eval().to(device)
