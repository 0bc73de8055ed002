"""Which layouts the compiled kernels walk in place (csrc/kernel_guards.h, rows_share_dense_layout, one
helper for the CPU and the CUDA kernels; CUDA where a GPU is at hand): a layout they take in place runs
without a single copy, a layout they cannot walk takes the copying fallback. The profiler counts the
copies (the host's record of them, on either device)."""

from __future__ import annotations

import pytest
import torch
from torch.profiler import ProfilerActivity, profile

from lst_fast import ops
from lst_fast.backends._extension import has_native_kernel
from conftest import DEVICES

COPIES = ("aten::copy_", "aten::contiguous", "aten::clone")


def copies_in_one_step(x, target, grad, adv) -> int:
    ops.orthogonal_step(x, target, grad, adv, step_size=1e-2, adv_step_size=2e-3, backend="native")  # warm
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        ops.orthogonal_step(x, target, grad, adv, step_size=1e-2, adv_step_size=2e-3, backend="native")
    return sum(e.count for e in prof.key_averages() if e.key in COPIES)


def tensors(shape, grad_strides=None, device="cpu"):
    """x, target, grad, adv of `shape`, contiguous; grad with `grad_strides` when given."""
    gen = torch.Generator().manual_seed(0)
    x, target, adv = (torch.rand(shape, generator=gen).to(device) for _ in range(3))
    grad = torch.randn(shape, generator=gen).to(device)
    if grad_strides is not None:
        grad = torch.empty_strided(shape, grad_strides, device=device).copy_(grad)
    return x, target, grad, adv


def native_or_skip(device):
    if not has_native_kernel("orthogonal_step", device):
        pytest.skip(f"no compiled orthogonal_step kernel for {device}")


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize(
    "shape, grad_strides",
    [
        ((64, 1, 28, 28), (784, 1, 28, 1)),  # channels-last strides (built by hand: .contiguous keeps C=1 as is)
        ((1, 3, 8, 8), (64, 64, 8, 1)),  # a batch of one as (3, 1, 8, 8).transpose(0, 1) gives it
    ],
)
def test_size_one_dimensions_do_not_force_the_copying_fallback(device, shape, grad_strides):
    """A single-channel batch with a channels-last gradient, or a batch of one whose batch stride is another:
    the strides differ only in a dimension of size 1, so the memory is the same and no copy is made (before
    the fix the step copied its inputs: 5 copies)."""
    native_or_skip(device)
    x, target, grad, adv = tensors(shape, grad_strides, device)
    assert grad.stride() != x.stride()  # the case: the strides differ, in a dimension of size 1 only
    assert copies_in_one_step(x, target, grad, adv) == 0
    kw = {"step_size": 1e-2, "adv_step_size": 2e-3}
    adv_want, adv_got = adv.clone(), adv.clone()  # the step updates adv in place
    want = ops.orthogonal_step(x, target, grad.contiguous(), adv_want, **kw, backend="reference")
    got = ops.orthogonal_step(x, target, grad, adv_got, **kw, backend="native")
    assert torch.equal(got, want) and torch.equal(adv_got, adv_want)


@pytest.mark.parametrize("device", DEVICES)
def test_layouts_that_differ_in_memory_still_copy(device):
    """The counter sees copies when there are some: 3 channels, channels-last gradient, contiguous rest."""
    native_or_skip(device)
    x, target, grad, adv = tensors((4, 3, 8, 8), (192, 1, 24, 3), device)
    assert copies_in_one_step(x, target, grad, adv) > 0
