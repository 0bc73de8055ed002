"""The user's own image files: finding them (files, folders, glob patterns), reading them (Pillow) with a
model's own preprocessing, and writing images back as PNG.

Images come out as float32 (C, H, W) in [0, 1]: LST walks in image space, and the model's mean/std
normalization is applied inside `traverse`, so only the geometric part of the preprocessing (resize,
crop, interpolation, input size: lst_fast.data.preprocessing, a ModelDescriptor's) is applied here.
"""

from __future__ import annotations

import glob
import os
from pathlib import Path
from typing import List, Sequence

import torch
from torch import Tensor

from lst_fast.atomic_files import atomic_write
from lst_fast.data.preprocessing import Preprocessing, image_transform
from lst_fast.errors import EnvironmentFault, InputError, MissingFile

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


def _pil():
    try:
        from PIL import Image
    except ImportError:
        raise EnvironmentFault("reading and writing images needs Pillow: pip install Pillow") from None
    return Image


def collect_images(specs: Sequence[str], what: str = "image") -> List[Path]:
    """The image files named by `specs` (files, folders: their PNG/JPEG files, glob patterns), sorted
    within each spec, in the order given; ValueError naming a spec that matches nothing."""
    found: List[Path] = []
    for spec in specs:
        path = Path(spec).expanduser()
        if path.is_dir():
            files = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
            if not files:
                raise InputError(f"the {what} folder {spec} holds no PNG or JPEG files")
        elif path.is_file():
            files = [path]
        elif glob.has_magic(spec):
            files = sorted(
                Path(p)
                for p in glob.glob(os.path.expanduser(spec), recursive=True)
                if Path(p).is_file() and Path(p).suffix.lower() in IMAGE_SUFFIXES
            )
            if not files:
                raise InputError(f"the {what} pattern {spec!r} matches no PNG or JPEG files")
        else:
            raise MissingFile(f"no {what} file, folder or pattern {spec}")
        found += files
    return found


def load_images(paths: Sequence[Path], pre: Preprocessing) -> Tensor:
    """The files resized and cropped as `pre` says: float32 (N, C, H, W) in [0, 1]."""
    Image = _pil()
    transform = image_transform(pre)
    mode = "L" if pre.input_size[0] == 1 else "RGB"
    images = []
    for path in paths:
        try:
            with Image.open(path) as image:
                image = image.convert(mode)
        except (OSError, ValueError) as error:  # Pillow's UnidentifiedImageError is an OSError
            raise InputError(f"cannot read the image {path}: {error}") from error
        images.append(transform(image))
    return torch.stack(images) if images else torch.empty(0, *pre.input_size)


def save_png(image: Tensor, path: Path) -> Path:
    """Write a (C, H, W) image in [0, 1] as an 8-bit PNG (grey for one channel), atomically."""
    Image = _pil()
    array = (image.detach().float().cpu().clamp(0, 1) * 255).round().to(torch.uint8)
    array = array[0].numpy() if array.shape[0] == 1 else array.permute(1, 2, 0).numpy()
    return atomic_write(path, lambda tmp: Image.fromarray(array).save(tmp, format="PNG"))
