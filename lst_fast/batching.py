"""Batch sizes for LST when the user gives none: the whole set on the CPU, and on a GPU as many images
as the free memory holds, from one measured forward+backward on a few images."""
from __future__ import annotations

from typing import Callable, Iterator, Tuple

import torch

# Share of the free memory LST may plan to use: the caching allocator, cuDNN workspaces and
# fragmentation need the rest.
MEMORY_SHARE = 0.7
PROBE_IMAGES = 8


def batch_size_for(free_bytes: int, bytes_per_image: float, n: int, multiple: int = 8) -> int:
    """The largest batch (at most n) whose planned use fits MEMORY_SHARE of free_bytes, rounded down to
    a multiple of `multiple` when that is at least `multiple`."""
    if n <= 0:
        return 0
    if bytes_per_image <= 0:
        return n
    fits = int(MEMORY_SHARE * max(free_bytes, 0) // bytes_per_image)
    if fits >= multiple:
        fits -= fits % multiple
    return max(1, min(n, fits))


def measure_cuda_batch_size(run_probe: Callable[[int], None], n: int, device: torch.device) -> int:
    """Run `run_probe(k)` (one forward+backward on k images) and size the batch from the memory it took
    per image and the memory free on `device` now."""
    k = min(n, PROBE_IMAGES)
    torch.cuda.synchronize(device)
    base = torch.cuda.memory_allocated(device)
    torch.cuda.reset_peak_memory_stats(device)
    run_probe(k)
    torch.cuda.synchronize(device)
    per_image = max(torch.cuda.max_memory_allocated(device) - base, 1) / k
    free, _ = torch.cuda.mem_get_info(device)
    reserved_idle = torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
    return batch_size_for(free + reserved_idle, per_image, n)


def batches(n: int, size: int) -> Iterator[Tuple[int, int]]:
    """(start, stop) of consecutive batches covering range(n)."""
    for start in range(0, n, size):
        yield start, min(n, start + size)
