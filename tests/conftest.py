"""Shared fixtures: devices, tiny seeded models, and the plain two-pass LST loop used as the oracle."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

import pytest
import torch
import torch.nn.functional as F

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])

# Under pytest-xdist (`-n 2`, the README's command) each worker computes on one thread, and so do the
# processes the tests start: two workers with two OpenMP threads each on two cores spin against each other
# (measured on the whole suite: 296 s and 559 CPU s instead of 120 s and 211). OMP_NUM_THREADS set by the
# caller wins.
if os.environ.get("PYTEST_XDIST_WORKER") and "OMP_NUM_THREADS" not in os.environ:
    os.environ["OMP_NUM_THREADS"] = "1"
    torch.set_num_threads(1)


def tiny_cnn(channels: int = 1, classes: int = 5, size: int = 8, scale: float = 4.0, seed: int = 0) -> torch.nn.Module:
    """A seeded CNN with BatchNorm and fairly confident predictions (logits scaled by `scale`)."""
    torch.manual_seed(seed)
    model = torch.nn.Sequential(
        torch.nn.Conv2d(channels, 6, 3, padding=1),
        torch.nn.BatchNorm2d(6),
        torch.nn.ReLU(),
        torch.nn.MaxPool2d(2),
        torch.nn.Flatten(),
        torch.nn.Linear(6 * (size // 2) ** 2, classes),
    )
    with torch.no_grad():
        model[1].running_mean.uniform_(-0.1, 0.1)
        model[1].running_var.uniform_(0.5, 1.5)
        model[5].weight.mul_(scale)
    return model


@contextlib.contextmanager
def torch_threads(count: int) -> Iterator[None]:
    """Run a block with `count` intra-op threads, as a process started with OMP_NUM_THREADS=count does: a
    run in this process is then computed as the torchrun workers compute theirs (one thread each)."""
    before = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def cli_exit_code(argv: list[str]) -> int:
    """`lst-fast argv` run in this process: its exit code, also when a usage error exits through SystemExit
    (as argparse's do). A process of its own costs a torch start; the entry point is tested as a process
    in tests/test_fashion.py."""
    from lst_fast.cli import main

    try:
        return main(argv)
    except SystemExit as error:
        return error.code


def two_pass_lst(
    model,
    xs,
    xt,
    label,
    *,
    step_size,
    iterations,
    threshold,
    adv_step_size,
    init_noise,
    bounds=(0.0, 1.0),
    generator=None,
):
    """docs/ALGORITHM.md section 1 written plainly, with the paper's two model evaluations per iteration."""
    lo, hi = bounds
    model.eval()
    with torch.no_grad():
        p0 = torch.softmax(model(xs).double(), 1).gather(1, label[:, None]).squeeze(1)
    x = xs.clone()
    if init_noise > 0:
        noise = torch.rand(xs.shape, generator=generator, device=xs.device, dtype=xs.dtype)
        x = (xs + (noise * 2 - 1) * init_noise).clamp(lo, hi)
    adv = torch.zeros_like(x)
    for _ in range(iterations):
        xg = x.clone().requires_grad_(True)
        (g,) = torch.autograd.grad(F.cross_entropy(model(xg), label, reduction="sum"), xg)
        v = xt - x
        g64, v64 = g.double(), v.double()
        gv = (g64 * v64).flatten(1).sum(1)
        gg = (g64 * g64).flatten(1).sum(1)
        coef = torch.where(gg > 0, gv / gg, 0.0).view(-1, 1, 1, 1)
        v_perp = (v64 - coef * g64).float()
        adv = (adv + (adv_step_size / 2) * g).clamp(-adv_step_size, adv_step_size)
        x_new = ((x + step_size * v_perp) - adv).clamp(lo, hi)
        with torch.no_grad():
            p = torch.softmax(model(x_new).double(), 1).gather(1, label[:, None]).squeeze(1)
        accept = (p0 - p) < threshold
        x = torch.where(accept.view(-1, 1, 1, 1), x_new, x)
    return x


@pytest.fixture(params=DEVICES)
def device(request):
    return torch.device(request.param)


class PerSample(torch.nn.Module):
    """Runs the wrapped model one sample at a time, so its outputs cannot depend on the batch.

    (On the CPU, convolutions and matrix products round differently for batch 1 and batch N.)
    """

    def __init__(self, net: torch.nn.Module):
        super().__init__()
        self.net = net

    def forward(self, x):
        return torch.cat([self.net(x[i : i + 1]) for i in range(x.shape[0])])
