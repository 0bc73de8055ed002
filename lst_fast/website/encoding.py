"""The site's image files written on every core. A batch of images is rounded to 8 bits in one tensor
operation by the caller (images.to_pixels), then a pool of threads encodes each image (PNG or JPEG
thumbnail) and writes its file. Threads suffice: Pillow's resize and its PNG and JPEG encoders release the
GIL, so the encodes of one build run side by side; torch's small per-image operations, which spin its
intra-op threads, are done once per batch instead. The bytes are those of images.write_image, image by
image; only the order in which the files appear changes."""

from __future__ import annotations

import os
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Deque, Optional, Sequence

from torch import Tensor

from lst_fast.website.images import pixels_bytes, to_pixels, write_bytes

__all__ = ["ImageWriter", "usable_cores"]


def usable_cores() -> int:
    """The cores this process may run on (its CPU affinity, where the system says; else all of them)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # macOS, Windows: no affinity call
        return max(1, os.cpu_count() or 1)


def _encode_and_write(pixels: Tensor, path: Path, thumbnail: int) -> Path:
    return write_bytes(pixels_bytes(pixels, thumbnail), path)


class ImageWriter:
    """Writes images as write_image does, `workers` at a time (default: every usable core); at most a few
    images per worker wait in memory. Use as a context manager: leaving it waits for every file and raises
    the first error of any write (EnvironmentFault for a full disk, as write_image)."""

    def __init__(self, thumbnail: int = 0, workers: Optional[int] = None) -> None:
        self.thumbnail = thumbnail
        self.workers = workers or usable_cores()
        self._pool = ThreadPoolExecutor(self.workers, thread_name_prefix="lst-site-images")
        self._pending: Deque[Future] = deque()

    def write(self, image: Tensor, path: Path, thumbnail: Optional[int] = None) -> None:
        """Queue `image` (C, H, W) in [0, 1] for `path`: a PNG, or a JPEG thumbnail when `thumbnail` (default:
        the writer's) is smaller than the image (images.image_bytes)."""
        self.write_batch(image[None], [path], thumbnail)

    def write_batch(self, images: Tensor, paths: Sequence[Path], thumbnail: Optional[int] = None) -> None:
        """Queue images (N, C, H, W) in [0, 1] (or uint8: 8-bit values) for `paths` (N), as `write` does each;
        the batch is rounded to 8 bits here, in one operation."""
        size = self.thumbnail if thumbnail is None else thumbnail
        for pixels, path in zip(to_pixels(images), paths, strict=True):
            while len(self._pending) >= 4 * self.workers:  # bounded: each queued image is held in memory
                self._pending.popleft().result()
            self._pending.append(self._pool.submit(_encode_and_write, pixels, Path(path), size))

    def wait(self) -> None:
        """Wait for every queued file; raise the first error."""
        while self._pending:
            self._pending.popleft().result()

    def __enter__(self) -> "ImageWriter":
        return self

    def __exit__(self, kind, error, trace) -> None:
        try:
            if error is None:
                self.wait()
        finally:
            for future in self._pending:
                future.cancel()
            self._pending.clear()
            self._pool.shutdown(wait=True)
