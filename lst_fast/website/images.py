"""The site's image files. Full size: lossless PNG at the data's resolution (each value rounded to 8 bits,
what a screen shows; the exact floats stay in the result files). Thumbnails, for images larger than the
thumbnail size: JPEG, used by the gallery and the side-by-side page only."""

from __future__ import annotations

import io
from pathlib import Path

from torch import Tensor

from lst_fast.atomic_files import atomic_write

__all__ = ["THUMBNAIL_QUALITY", "image_bytes", "needs_thumbnail", "write_image"]

THUMBNAIL_QUALITY = 90


def _pil(image: Tensor):
    """(C, H, W) in [0, 1] as a PIL image with each value rounded to 8 bits (grey or RGB)."""
    from PIL import Image

    pixels = image.detach().float().cpu().clamp(0, 1).mul(255).round().byte()
    if pixels.shape[0] == 1:
        return Image.fromarray(pixels[0].numpy(), mode="L")
    return Image.fromarray(pixels[:3].permute(1, 2, 0).contiguous().numpy(), mode="RGB")


def needs_thumbnail(image: Tensor, thumbnail: int) -> bool:
    return max(image.shape[-2:]) > thumbnail


def image_bytes(image: Tensor, thumbnail: int = 0) -> bytes:
    """PNG of the image at its own size (thumbnail 0, or the image no larger than it), else a JPEG
    thumbnail whose longer side is `thumbnail` pixels."""
    picture = _pil(image)
    buffer = io.BytesIO()
    if thumbnail and needs_thumbnail(image, thumbnail):
        from PIL import Image

        picture.thumbnail((thumbnail, thumbnail), Image.Resampling.LANCZOS)
        picture.save(buffer, format="JPEG", quality=THUMBNAIL_QUALITY)
    else:
        picture.save(buffer, format="PNG", optimize=False, compress_level=6)
    return buffer.getvalue()


def write_image(image: Tensor, path: Path, thumbnail: int = 0) -> Path:
    data = image_bytes(image, thumbnail)
    return atomic_write(Path(path), lambda tmp: Path(tmp).write_bytes(data))
