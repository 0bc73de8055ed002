"""The site's image files. Full size: lossless PNG at the data's resolution (each value rounded to 8 bits,
what a screen shows; the exact floats stay in the result files). Thumbnails, for images larger than the
thumbnail size: JPEG, used by the gallery and the side-by-side page only.

to_pixels rounds a batch of images to 8 bits in one tensor operation (the same values, image by image, as
one at a time; lst_fast.website.encoding converts a batch, then encodes its images on every core)."""

from __future__ import annotations

import io
from pathlib import Path

import torch
from torch import Tensor

from lst_fast.atomic_files import atomic_write

__all__ = [
    "THUMBNAIL_QUALITY",
    "image_bytes",
    "needs_thumbnail",
    "pixels_bytes",
    "to_pixels",
    "write_bytes",
    "write_image",
]

THUMBNAIL_QUALITY = 90


def to_pixels(images: Tensor) -> Tensor:
    """(N, C, H, W) in [0, 1] as uint8 on the CPU, each value rounded to 8 bits: (N, H, W) for grey images,
    (N, H, W, 3) for colour ones (channels past the third are dropped). uint8 images are 8-bit values
    already, taken as they are (v / 255 rounds back to v for every v, tests/test_site_speed.py)."""
    pixels = images.detach().cpu()
    if pixels.dtype != torch.uint8:
        pixels = pixels.float().clamp(0, 1).mul(255).round().byte()
    return pixels[:, 0] if pixels.shape[1] == 1 else pixels[:, :3].permute(0, 2, 3, 1).contiguous()


def _pil(pixels: Tensor):
    """One image of to_pixels, (H, W) or (H, W, 3), as a PIL image (grey or RGB)."""
    from PIL import Image

    return Image.fromarray(pixels.numpy(), mode="L" if pixels.dim() == 2 else "RGB")


def needs_thumbnail(image: Tensor, thumbnail: int) -> bool:
    return max(image.shape[-2:]) > thumbnail


def pixels_bytes(pixels: Tensor, thumbnail: int = 0) -> bytes:
    """image_bytes of one image of to_pixels."""
    picture = _pil(pixels)
    buffer = io.BytesIO()
    if thumbnail and max(pixels.shape[:2]) > thumbnail:
        from PIL import Image

        picture.thumbnail((thumbnail, thumbnail), Image.Resampling.LANCZOS)
        picture.save(buffer, format="JPEG", quality=THUMBNAIL_QUALITY)
    else:
        picture.save(buffer, format="PNG", optimize=False, compress_level=6)
    return buffer.getvalue()


def image_bytes(image: Tensor, thumbnail: int = 0) -> bytes:
    """PNG of the image (C, H, W) at its own size (thumbnail 0, or the image no larger than it), else a JPEG
    thumbnail whose longer side is `thumbnail` pixels."""
    return pixels_bytes(to_pixels(image[None])[0], thumbnail)


def write_image(image: Tensor, path: Path, thumbnail: int = 0) -> Path:
    return write_bytes(image_bytes(image, thumbnail), path)


def write_bytes(data: bytes, path: Path) -> Path:
    """Write an encoded image (pixels_bytes) to `path` atomically."""
    return atomic_write(Path(path), lambda tmp: Path(tmp).write_bytes(data))
