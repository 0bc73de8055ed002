"""The fused step on row groups that fit the GPU's L2 (issue 36, point 5): a design to time, not the default.

At 224 px a row takes the two-kernel path, which reads x, target and grad twice. Over a whole batch of 128
the second read misses L2 (231 MB against the H200's 60 MiB), so the step makes 9 passes from memory
against the 6 the bandwidth counts (67% of the copy at most). Running both kernels on a group of rows whose
x, target and grad fit in half the L2 keeps the second read in L2: 6 passes from memory plus the launch gaps
(bench/RESULTS.md counts 82% at best). The benchmark's "fused-row-groups" variant times it beside the
default path; the library's path stays as it is until a GPU has shown this one correct and faster.
"""

from __future__ import annotations

from typing import Callable, List

import torch
from torch import Tensor

READ_TWICE = 3  # x, target and grad: what the second kernel reads again


def rows_per_group(row_bytes: int, l2_bytes: int, rows: int) -> int:
    """The most rows whose READ_TWICE arrays fit in half the L2 (the other half for adv, the output and
    whatever else is resident), at least 1 and at most `rows`."""
    if row_bytes <= 0 or l2_bytes <= 0 or rows <= 0:
        raise ValueError(f"row_bytes, l2_bytes and rows must be > 0, got {row_bytes}, {l2_bytes}, {rows}")
    return max(1, min(rows, (l2_bytes // 2) // (READ_TWICE * row_bytes)))


def group_bounds(rows: int, group: int) -> List[slice]:
    """Consecutive slices of the batch, `group` rows each (the last one shorter)."""
    return [slice(start, min(rows, start + group)) for start in range(0, rows, group)]


def grouped_step(
    kernel: Callable[..., Tensor], x: Tensor, target: Tensor, grad: Tensor, adv: Tensor, group: int, **scalars: float
) -> List[Tensor]:
    """`kernel(x, target, grad, adv, ...)` on each group of rows (views of the batch, so adv is updated in
    place); one output per group, so no pass is spent joining them."""
    return [kernel(x[s], target[s], grad[s], adv[s], **scalars) for s in group_bounds(x.shape[0], group)]


def l2_bytes(device: torch.device) -> int:
    """The device's L2 cache size in bytes (CUDA only)."""
    return int(torch.cuda.get_device_properties(device).L2_cache_size)
