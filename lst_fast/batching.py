"""Batch sizes for LST when the user gives none.

GPU: as many images as the free memory holds, from one measured forward+backward on a few images.
CPU: batches whose saved activations stay near the caches. Small models run far faster in such batches
(the shipped CNN, 2000 images: fp32 3.2k img-iter/s in batches of 100 against 1.3k in one batch of 2000;
bf16 6.2k at 200 against 3.3k), while large ones want at least a few dozen images per batch for their
convolutions; so: 32 MiB of saved activations per batch, at least 16 images, at most half the available
memory. The rule depends only on the model and the image shape, so runs are reproducible.
"""
from __future__ import annotations

import os
from typing import Callable, Optional

import torch

# Share of the free memory LST may plan to use: the caching allocator, cuDNN workspaces and
# fragmentation need the rest.
MEMORY_SHARE = 0.7
PROBE_IMAGES = 8
CPU_CACHE_BUDGET = 32 * 2**20
CPU_MIN_BATCH = 16
CPU_MEMORY_SHARE = 0.5


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
    per image and the memory free on `device` now. (This resets the device's peak-memory statistics.)"""
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


def saved_bytes_per_image(run_probe: Callable[[int], None]) -> float:
    """Bytes autograd keeps for the backward per image: `run_probe(k)` (one forward+backward on k images)
    at k = 1 and k = 2; the difference leaves out what does not grow with the batch (the weights)."""

    def saved(k: int) -> int:
        total = 0

        def pack(t: torch.Tensor) -> torch.Tensor:
            nonlocal total
            total += t.numel() * t.element_size()
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            run_probe(k)
        return total

    return float(max(saved(2) - saved(1), 1))


def available_memory() -> Optional[int]:
    """Bytes of memory available to this process (Linux MemAvailable), or None when unknown."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def cpu_batch_size(bytes_per_image: float, n: int, available: Optional[int]) -> int:
    """CPU_CACHE_BUDGET of saved activations per batch, at least CPU_MIN_BATCH images, at most
    CPU_MEMORY_SHARE of the available memory, at most n."""
    size = max(CPU_MIN_BATCH, int(CPU_CACHE_BUDGET // bytes_per_image))
    if available is not None:
        size = min(size, int(CPU_MEMORY_SHARE * available // bytes_per_image))
    return max(1, min(n, size))
