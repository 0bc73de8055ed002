"""The user's own image files: finding them (files, folders, glob patterns), reading them (Pillow) with a
model's own preprocessing, and writing images back as PNG.

Images come out as float32 (C, H, W) in [0, 1]: LST walks in image space, and the model's mean/std
normalization is applied inside `traverse`, so only the geometric part of the preprocessing (resize,
crop, interpolation, input size) is applied here.
"""
from __future__ import annotations

import dataclasses
import glob
import os
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

import torch
from torch import Tensor

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


def _pil():
    try:
        from PIL import Image
    except ImportError:
        raise RuntimeError("reading and writing images needs Pillow: pip install Pillow") from None
    return Image


@dataclasses.dataclass(frozen=True)
class Preprocessing:
    """How a model wants its images: channels and size, the resize/crop, and its normalization."""

    input_size: Tuple[int, int, int]  # (C, H, W)
    interpolation: str = "bilinear"
    crop_pct: float = 1.0  # resize the shorter side to size / crop_pct, then crop the center
    crop_mode: str = "center"  # timm's modes: center, squash, border
    mean: Optional[Tuple[float, ...]] = None  # None: the model normalizes inside (or needs none)
    std: Optional[Tuple[float, ...]] = None


def collect_images(specs: Sequence[str], what: str = "image") -> List[Path]:
    """The image files named by `specs` (files, folders: their PNG/JPEG files, glob patterns), sorted
    within each spec, in the order given; ValueError naming a spec that matches nothing."""
    found: List[Path] = []
    for spec in specs:
        path = Path(spec).expanduser()
        if path.is_dir():
            files = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
            if not files:
                raise ValueError(f"the {what} folder {spec} holds no PNG or JPEG files")
        elif path.is_file():
            files = [path]
        elif glob.has_magic(spec):
            files = sorted(Path(p) for p in glob.glob(os.path.expanduser(spec), recursive=True)
                           if Path(p).is_file() and Path(p).suffix.lower() in IMAGE_SUFFIXES)
            if not files:
                raise ValueError(f"the {what} pattern {spec!r} matches no PNG or JPEG files")
        else:
            raise FileNotFoundError(f"no {what} file, folder or pattern {spec}")
        found += files
    return found


def preprocessing_for(spec: str, net: torch.nn.Module, mean=None, std=None,
                      input_size: Optional[int] = None) -> Preprocessing:
    """The preprocessing of model `spec` (a name `resolve_model` takes): timm's data config for timm
    models, torchvision's ImageNet evaluation transform for torchvision models, the training size for the
    shipped and CIFAR-10 architectures. `input_size` overrides the height and width."""
    from lst_fast.models import ARCHITECTURES, SHIPPED

    kind, _, _ = spec.partition(":")
    if kind == "timm":
        from timm.data import resolve_data_config

        overrides = {"input_size": (3, input_size, input_size)} if input_size else {}
        cfg = resolve_data_config(overrides, model=net)
        c, h, w = cfg["input_size"]
        return Preprocessing((int(c), int(h), int(w)), cfg.get("interpolation", "bilinear"),
                             float(cfg.get("crop_pct") or 1.0), cfg.get("crop_mode") or "center",
                             _tuple(mean), _tuple(std))
    if kind == "torchvision":
        size = input_size or 224
        return Preprocessing((3, size, size), "bilinear", 0.875, "center", _tuple(mean), _tuple(std))
    if spec in SHIPPED or spec in ARCHITECTURES:
        channels, size = (3, 32) if spec == "wrn28_10" else (1, 28)
        size = input_size or size
        return Preprocessing((channels, size, size), "bilinear", 1.0, "center", _tuple(mean), _tuple(std))
    raise ValueError(f"no preprocessing known for model {spec!r}")


def _tuple(values) -> Optional[Tuple[float, ...]]:
    return None if values is None else tuple(float(v) for v in torch.as_tensor(values).flatten().tolist())


def _transform(pre: Preprocessing):
    """timm's evaluation transform for this preprocessing, without its normalization."""
    from timm.data import create_transform

    kwargs = dict(input_size=pre.input_size, interpolation=pre.interpolation, crop_pct=pre.crop_pct,
                  crop_mode=pre.crop_mode)
    try:
        return create_transform(**kwargs, normalize=False)
    except TypeError:  # timm before `normalize=`: drop the Normalize step ourselves
        from torchvision import transforms

        full = create_transform(**kwargs)
        return transforms.Compose([t for t in full.transforms if type(t).__name__ != "Normalize"])


def load_images(paths: Sequence[Path], pre: Preprocessing) -> Tensor:
    """The files resized and cropped as `pre` says: float32 (N, C, H, W) in [0, 1]."""
    Image = _pil()
    transform = _transform(pre)
    mode = "L" if pre.input_size[0] == 1 else "RGB"
    images = []
    for path in paths:
        try:
            with Image.open(path) as image:
                image = image.convert(mode)
        except (OSError, ValueError) as error:  # Pillow's UnidentifiedImageError is an OSError
            raise ValueError(f"cannot read the image {path}: {error}") from error
        tensor = transform(image)  # uint8 from timm's normalize=False transform, float otherwise
        images.append(tensor.to(torch.float32) / 255.0 if tensor.dtype == torch.uint8 else tensor.to(torch.float32))
    return torch.stack(images) if images else torch.empty(0, *pre.input_size)


def save_png(image: Tensor, path: Path) -> Path:
    """Write a (C, H, W) image in [0, 1] as an 8-bit PNG (grey for one channel)."""
    Image = _pil()
    array = (image.detach().float().cpu().clamp(0, 1) * 255).round().to(torch.uint8)
    array = array[0].numpy() if array.shape[0] == 1 else array.permute(1, 2, 0).numpy()
    Image.fromarray(array).save(path)
    return path
