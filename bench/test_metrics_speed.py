"""SSIM as the evaluation calls it: `distances(res.images, target)` once per chunk of walks, a batch of 224 px
colour pairs in float32, on the CPU.

    pytest bench/test_metrics_speed.py --benchmark-json=out.json

Measured: `lst_fast.metrics.ssim` on PAIRS pairs of 3 x 224 x 224 (smooth random images and a noisy copy),
which on the CPU runs the compiled kernel (`kernel`), its PyTorch fallback (`blocks`: block-banded
products), and the implementation before both (`full_band`: one full band matrix per side, float64). Recorded
(extra_info): wall and process-CPU milliseconds per pair (on a shared machine the CPU time varies less),
the threads, and the largest difference between the two (both float64, so about 1e-15).
Under --benchmark-disable (CI) the case shrinks to 2 pairs of 32 px.
"""

from __future__ import annotations

import time

import pytest
import torch

from lst_fast.backends._extension import has_native_kernel
from lst_fast.metrics import _ssim_blocks, ssim
from conftest import environment, median_seconds

PAIRS, SIZE = 16, 224
CI = {"pairs": 2, "size": 32}


def full_band_ssim(x: torch.Tensor, y: torch.Tensor, window: int = 11, sigma: float = 1.5) -> torch.Tensor:
    """The implementation before: the blur along each side as one (size - 10, size) band matrix, float64."""

    def band(size: int) -> torch.Tensor:
        coords = torch.arange(window, dtype=torch.float64) - (window - 1) / 2
        g = torch.exp(-(coords**2) / (2 * sigma**2))
        rows = size - window + 1
        columns = torch.arange(rows)[:, None] + torch.arange(window)[None, :]
        return torch.zeros(rows, size, dtype=torch.float64).scatter_(1, columns, (g / g.sum()).expand(rows, window))

    x, y = x.double(), y.double()
    along_h, along_w = band(x.shape[-2]), band(x.shape[-1]).T
    mu_x, mu_y = along_h @ x @ along_w, along_h @ y @ along_w
    var_x = along_h @ (x * x) @ along_w - mu_x**2
    var_y = along_h @ (y * y) @ along_w - mu_y**2
    cov = along_h @ (x * y) @ along_w - mu_x * mu_y
    c1, c2 = 0.01**2, 0.03**2
    s = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / ((mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2))
    return s.flatten(1).mean(1)


def image_pairs(pairs: int, size: int) -> "tuple[torch.Tensor, torch.Tensor]":
    """Smooth random colour images (low-resolution noise, upsampled) and a noisy copy, float32 in [0, 1]."""
    generator = torch.Generator().manual_seed(0)
    coarse = torch.rand(pairs, 3, size // 8, size // 8, generator=generator)
    x = torch.nn.functional.interpolate(coarse, size=(size, size), mode="bilinear", align_corners=False)
    y = (x + 0.05 * torch.randn(x.shape, generator=generator)).clamp(0, 1)
    return x.contiguous(), y


def blocks_ssim(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """lst_fast.metrics.ssim's PyTorch fallback (what runs without the compiled kernels, and on GPUs)."""
    return _ssim_blocks(x, y, 1.0, 11, 1.5)


IMPLEMENTATIONS = {"kernel": ssim, "blocks": blocks_ssim, "full_band": full_band_ssim}


@pytest.mark.parametrize("implementation", list(IMPLEMENTATIONS))
def test_ssim_224_colour_batch(benchmark, implementation):
    if implementation == "kernel" and not has_native_kernel("ssim", "cpu"):
        pytest.skip("needs the compiled CPU kernels")
    case = CI if benchmark.disabled else {"pairs": PAIRS, "size": SIZE}
    x, y = image_pairs(case["pairs"], case["size"])
    function = IMPLEMENTATIONS[implementation]
    cpu_seconds = []

    def timed():
        start = time.process_time()
        function(x, y)
        cpu_seconds.append(time.process_time() - start)

    benchmark.pedantic(timed, rounds=5, warmup_rounds=1)
    seconds = median_seconds(benchmark)
    if seconds is None:  # --benchmark-disable: the code ran once, untimed
        return
    cpu = sorted(cpu_seconds[1:])[len(cpu_seconds[1:]) // 2]
    benchmark.extra_info.update(
        environment("cpu"),
        implementation=implementation,
        pairs=case["pairs"],
        size=case["size"],
        ms_per_pair=1e3 * seconds / case["pairs"],
        min_ms_per_pair=1e3 * benchmark.stats.stats.min / case["pairs"],
        cpu_ms_per_pair=1e3 * cpu / case["pairs"],
        largest_difference_to_full_band=float((function(x, y) - full_band_ssim(x, y)).abs().max()),
    )
