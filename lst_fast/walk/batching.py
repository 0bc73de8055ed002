"""Batches for LST: how large, and the driver that walks a set batch by batch.

Sizes when the user gives none (measurements behind the rules: bench/RESULTS.md, "Batch sizes"):
- GPU: as many images as MEMORY_SHARE of the free memory holds, from the memory one forward+backward
  takes at two probe sizes (the difference is what grows per image) plus what the walk itself holds per
  image (`walk_bytes_per_image`: its state, the bf16 end check's kept iterates, graph mode's own copies,
  recorded trace images). Each probe size is measured on its second call, so cuDNN's autotuning (which
  tries every algorithm, with its workspace, on the first call of a shape) never inflates the estimate
  and the size does not depend on what was tuned before.
- CPU: batches whose saved activations stay near the caches: CPU_CACHE_BUDGET of saved activations per
  batch, at least CPU_MIN_BATCH images, at most CPU_MEMORY_SHARE of the available memory. The rule
  depends only on the model and the image shape, so runs are reproducible.

The driver (`run_in_batches`) runs one function per batch and, when an automatic size runs out of memory,
halves it and redoes that batch (finished batches are kept).
"""

from __future__ import annotations

import math
import os
from typing import Callable, List, Optional, Tuple, TypeVar

import torch

from lst_fast.caller_warning import warn_at_caller

OUT_OF_MEMORY = getattr(torch, "OutOfMemoryError", torch.cuda.OutOfMemoryError)  # the former from torch 2.5

# Share of the free memory LST may plan to use: the caching allocator, cuDNN workspaces and
# fragmentation need the rest.
MEMORY_SHARE = 0.7
PROBE_IMAGES = 8
CPU_CACHE_BUDGET = 32 * 2**20
CPU_MIN_BATCH = 16
CPU_MEMORY_SHARE = 0.5

Probe = Callable[[int], None]  # one forward+backward on the first k images

# Image-sized tensors (in the walk's dtype) a walk holds beside one forward+backward, per image.
WALK_STATE_IMAGES = 5  # x, grad, adv, the candidate and the candidate's gradient
GRAPH_OWNED_IMAGES = 4  # graph=True: the replay's own copies of the target, x, grad and adv


def walk_bytes_per_image(image_bytes: int, *, kept_iterates: int = 0, graph: bool = False, recorded: int = 0) -> int:
    """Device bytes per image that a walk holds besides one forward+backward (which the probe measures):
    the walk state, `kept_iterates` copies of x (the bf16 end check), graph mode's owned copies and
    `recorded` trace images kept on the walk's device. `image_bytes`: one image in the walk's dtype."""
    images = WALK_STATE_IMAGES + kept_iterates + (GRAPH_OWNED_IMAGES if graph else 0) + recorded
    return image_bytes * images


def batch_size_for(free_bytes: int, bytes_per_image: float, n: int, multiple: int = 8, fixed_bytes: float = 0) -> int:
    """The largest batch (at most n) whose planned use (fixed_bytes plus bytes_per_image per image) fits
    MEMORY_SHARE of free_bytes, rounded down to a multiple of `multiple` when that is at least `multiple`."""
    if n <= 0:
        return 0
    if bytes_per_image <= 0:
        return n
    fits = int(max(MEMORY_SHARE * max(free_bytes, 0) - fixed_bytes, 0) // bytes_per_image)
    if fits >= multiple:
        fits -= fits % multiple
    return max(1, min(n, fits))


class CudaMemory:
    """The memory readings the GPU rule takes, on one device (tests hand in fakes)."""

    def __init__(self, device: torch.device) -> None:
        self.device = device

    def settle(self) -> int:
        """Wait for the device; return the bytes allocated now and start a new peak."""
        torch.cuda.synchronize(self.device)
        allocated = torch.cuda.memory_allocated(self.device)
        torch.cuda.reset_peak_memory_stats(self.device)
        return allocated

    def peak(self) -> int:
        torch.cuda.synchronize(self.device)
        return torch.cuda.max_memory_allocated(self.device)

    def free(self) -> int:
        """Free device memory plus what the caching allocator holds unused."""
        free, _ = torch.cuda.mem_get_info(self.device)
        return free + torch.cuda.memory_reserved(self.device) - torch.cuda.memory_allocated(self.device)


def measure_cuda_batch_size(run_probe: Probe, n: int, memory: CudaMemory, walk_bytes: float = 0) -> int:
    """Size the batch from the peak memory of `run_probe` at PROBE_IMAGES / 2 and PROBE_IMAGES images, each
    measured on its second call (see the module's docstring), plus `walk_bytes` per image (what the walk
    holds besides; `walk_bytes_per_image`). (This resets the peak-memory statistics.)"""
    sizes = (max(1, min(n, PROBE_IMAGES) // 2), min(n, PROBE_IMAGES))
    peaks = []
    for k in sizes:
        run_probe(k)  # the first call of a shape may autotune; not measured
        base = memory.settle()
        run_probe(k)
        peaks.append(max(memory.peak() - base, 0))
    if sizes[1] > sizes[0]:
        per_image = max(peaks[1] - peaks[0], 1) / (sizes[1] - sizes[0])
    else:
        per_image = max(peaks[1], 1) / sizes[1]
    fixed = max(peaks[0] - per_image * sizes[0], 0)
    return batch_size_for(memory.free(), per_image + walk_bytes, n, fixed_bytes=fixed)


def saved_bytes_per_image(run_probe: Probe) -> float:
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


def automatic_batch_size(run_probe: Probe, n: int, device: torch.device, walk_bytes: float = 0) -> int:
    """The automatic size for n images on `device`; 1 when not even the probe fits. `walk_bytes`: what
    the walk holds per image besides one forward+backward (GPU rule only; `walk_bytes_per_image`)."""
    cpu = device.type == "cpu"
    if n <= (CPU_MIN_BATCH if cpu else PROBE_IMAGES):
        return n
    try:
        if cpu:
            return cpu_batch_size(saved_bytes_per_image(run_probe), n, available_memory())
        return measure_cuda_batch_size(run_probe, n, CudaMemory(device), walk_bytes)
    except OUT_OF_MEMORY:  # not even the probe's few images fit: one at a time, if that fits
        if not cpu:
            torch.cuda.empty_cache()
        return 1


# -- the driver -----------------------------------------------------------------------------------------

T = TypeVar("T")


def progress_bar(total: int, enabled: bool):
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc="LST", unit="it", dynamic_ncols=True)


def run_in_batches(
    run: Callable[[slice, object], T],
    n: int,
    size: int,
    *,
    automatic: bool,
    device: torch.device,
    steps_per_batch: int,
    progress: bool,
) -> Tuple[List[T], int]:
    """`run(part, bar)` for consecutive slices of n items, `size` at a time; returns the results in order
    and the size used last. The progress bar (None when off) counts `steps_per_batch` per batch.

    An out-of-memory error halves an `automatic` size and redoes that batch (with a warning; finished
    batches are kept); a size the user gave, or a batch of one, raises with advice."""
    bar = progress_bar(steps_per_batch * math.ceil(n / size), progress)
    parts: List[T] = []
    start = 0
    try:
        while start < n:
            part = slice(start, min(n, start + size))
            try:
                parts.append(run(part, bar))
                start = part.stop
                continue
            except OUT_OF_MEMORY as error:
                if not automatic or size == 1:
                    raise out_of_memory(error, size, device) from error
            # Out of the except block: the error's traceback, and the failed batch's tensors its frames
            # hold, are gone before the cache is emptied and the half-size batch allocates.
            size //= 2
            warn_at_caller(f"LST ran out of {device.type} memory; continuing with batches of {size}", RuntimeWarning)
            if device.type == "cuda":
                torch.cuda.empty_cache()
            if bar is not None:
                bar.reset(total=steps_per_batch * (len(parts) + math.ceil((n - start) / size)))
                bar.update(steps_per_batch * len(parts))
    finally:
        if bar is not None:
            bar.close()
    return parts, size


def out_of_memory(error: Exception, size: int, device: torch.device) -> Exception:
    if size == 1:
        advice = "even one image does not fit; free memory or use a smaller model input"
    else:
        advice = f"pass batch_size={size // 2} or smaller"
    return OUT_OF_MEMORY(
        f"LST on a batch of {size} images ran out of {device.type} memory; the model's forward and "
        f"backward need it for every iteration: {advice}. ({error})"
    )
