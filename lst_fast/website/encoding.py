"""The site's image files written on every core: each image is converted, encoded (PNG or JPEG thumbnail,
lst_fast.website.images) and written by a pool of threads. Threads suffice: torch's conversion, Pillow's
resize and its PNG and JPEG encoders release the GIL, so the encodes of one build run side by side. The
bytes are those of images.write_image, image by image; only the order the files appear in changes."""

from __future__ import annotations

import os
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Deque, Optional

from torch import Tensor

from lst_fast.website.images import write_image

__all__ = ["ImageWriter", "usable_cores"]


def usable_cores() -> int:
    """The cores this process may run on (its CPU affinity, where the system says; else all of them)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # macOS, Windows: no affinity call
        return max(1, os.cpu_count() or 1)


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
        size = self.thumbnail if thumbnail is None else thumbnail
        while len(self._pending) >= 4 * self.workers:  # bounded: the queued images are held in memory
            self._pending.popleft().result()
        self._pending.append(self._pool.submit(write_image, image, Path(path), size))

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
