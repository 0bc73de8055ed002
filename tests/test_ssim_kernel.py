"""The compiled SSIM kernel (csrc/cpu/ssim_kernel.cpp) against the PyTorch blocks version, its oracle, across
dtypes, shapes, strides and edge cases; opcheck; and its guards when called directly. Agreement with
scikit-image is tests/test_geometry.py's (lst_fast.metrics.ssim runs the kernel on the CPU when built)."""

from __future__ import annotations

import pytest
import torch

from lst_fast import metrics
from lst_fast.backends._extension import has_native_kernel

pytestmark = pytest.mark.skipif(not has_native_kernel("ssim", "cpu"), reason="needs the compiled CPU kernels")


def _pairs(shape, dtype=torch.float32, seed=0, noise=0.1):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(shape, generator=g, dtype=torch.float64)
    y = (x + noise * torch.randn(shape, generator=g, dtype=torch.float64)).clamp(0, 1)
    return x.to(dtype), y.to(dtype)


def _oracle(x, y, window=11, sigma=1.5, data_range=1.0):
    return metrics._ssim_blocks(x, y, data_range, window, sigma)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("shape", [(3, 1, 28, 28), (2, 3, 33, 40), (1, 3, 11, 11), (2, 2, 12, 57), (4, 3, 64, 48)])
def test_kernel_equals_the_blocks_version(dtype, shape):
    x, y = _pairs(shape, dtype)
    ours = metrics.ssim(x, y)
    assert ours.dtype == torch.float64 and ours.shape == (shape[0],)
    torch.testing.assert_close(ours, _oracle(x, y), rtol=0, atol=1e-13)


def test_strided_inputs_give_the_contiguous_answer():
    x, y = _pairs((3, 3, 40, 40), seed=3)
    expected = metrics.ssim(x, y)
    last = x.to(memory_format=torch.channels_last), y.to(memory_format=torch.channels_last)
    assert torch.equal(metrics.ssim(*last), expected)
    wide_x, wide_y = _pairs((3, 3, 40, 80), seed=3)
    wide_x[..., ::2], wide_y[..., ::2] = x, y
    assert torch.equal(metrics.ssim(wide_x[..., ::2], wide_y[..., ::2]), expected)
    xt, yt = x.transpose(2, 3), y.transpose(2, 3)
    torch.testing.assert_close(metrics.ssim(xt, yt), _oracle(xt, yt), rtol=0, atol=1e-13)


def test_edge_cases():
    flat = torch.full((2, 3, 16, 16), 0.5)
    assert torch.equal(metrics.ssim(flat, flat), torch.ones(2, dtype=torch.float64))
    x, y = _pairs((2, 3, 24, 24), seed=5)
    assert torch.allclose(metrics.ssim(x, x), torch.ones(2, dtype=torch.float64), rtol=0, atol=1e-14)
    black_white = torch.zeros(1, 3, 64, 64)
    black_white[..., 30:] = 1.0
    other = black_white.clone()
    other[..., 10:14, :] = 0.5
    torch.testing.assert_close(metrics.ssim(black_white, other), _oracle(black_white, other), rtol=0, atol=1e-13)
    empty = torch.zeros(0, 3, 16, 16)
    assert metrics.ssim(empty, empty).shape == (0,)
    # window, sigma and data range other than the defaults reach the kernel
    x, y = _pairs((2, 1, 30, 30), torch.float64, seed=6)
    for window, sigma, data_range in ((7, 1.0, 1.0), (11, 1.5, 2.0), (3, 0.5, 255.0)):
        torch.testing.assert_close(
            metrics.ssim(x, y, data_range=data_range, window=window, sigma=sigma),
            _oracle(x, y, window, sigma, data_range),
            rtol=0,
            atol=1e-13,
        )


@pytest.mark.parametrize("keywords", [{"window": 0}, {"window": 2.5}, {"window": True}, {"sigma": 0.0}])
def test_a_window_or_sigma_that_means_nothing_is_named(keywords):
    x, y = _pairs((1, 1, 16, 16))
    with pytest.raises(ValueError, match="window|sigma"):
        metrics.ssim(x, y, **keywords)


def test_threads_do_not_change_the_answer():
    x, y = _pairs((5, 3, 48, 48), seed=7)
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = metrics.ssim(x, y)
        torch.set_num_threads(2)
        two = metrics.ssim(x, y)
    finally:
        torch.set_num_threads(before)
    assert torch.equal(one, two)


def test_without_the_kernel_the_blocks_version_runs(monkeypatch):
    x, y = _pairs((2, 3, 32, 32), seed=8)
    with_kernel = metrics.ssim(x, y)
    monkeypatch.setattr(metrics, "has_native_kernel", lambda name, device: False)
    torch.testing.assert_close(metrics.ssim(x, y), with_kernel, rtol=0, atol=1e-13)


def test_opcheck():
    x, y = _pairs((2, 3, 16, 16), seed=9)
    window = metrics._gaussian(11, 1.5, x.device)
    torch.library.opcheck(torch.ops.lst_fast_kernels.ssim.default, (x, y, window, 1e-4, 9e-4))


@pytest.mark.parametrize(
    "args",
    [
        lambda x, y, w: (x.to(torch.int32), y.to(torch.int32), w),  # integer images
        lambda x, y, w: (x, y[:, :2], w),  # shapes differ
        lambda x, y, w: (x, y.double(), w),  # dtypes differ
        lambda x, y, w: (x[0], y[0], w),  # not (N, C, H, W)
        lambda x, y, w: (x, y, w.view(1, -1)),  # window not 1-D
        lambda x, y, w: (x, y, w.float()),  # window not float64
        lambda x, y, w: (x[..., :8, :8], y[..., :8, :8], w),  # smaller than the window
        lambda x, y, w: (x, y, w[:0]),  # no taps
    ],
)
def test_the_kernel_called_directly_refuses_what_would_leave_its_memory(args):
    x, y = _pairs((2, 3, 16, 16), seed=10)
    window = metrics._gaussian(11, 1.5, x.device)
    with pytest.raises(RuntimeError, match="lst_fast_kernels::ssim"):
        torch.ops.lst_fast_kernels.ssim(*args(x, y, window), 1e-4, 9e-4)
