"""The width profile's own arithmetic (directions, projections, norms, random draws, the points) against the
model's forwards on its points, as a walk page of the site computes it: 64 directions, 6 radii, at 224 px.

    pytest bench/test_width_profile_cost.py --benchmark-json=out.json

Measured: `lst_fast.geometry.width_profile` on SAMPLES iterates of 3 x 224 x 224 with timm's resnet18
(random weights: the forward's cost does not depend on them), timed whole, and the seconds spent inside the
model's forward (a wrapper module timing each call). Recorded (extra_info): both, and their difference (the
profile's own arithmetic) per sample. Under --benchmark-disable (CI) it runs once at 32 px, untimed.
"""

from __future__ import annotations

import time

import pytest
import torch
from torch import nn

from lst_fast.geometry import width_profile
from lst_fast.website.walk_details import WIDTH_DIRECTIONS, WIDTH_RADII
from conftest import environment, median_seconds

SAMPLES, SIZE = 2, 224
CI = {"samples": 1, "size": 32}


class TimedForward(nn.Module):
    """The model, with the seconds spent in its forward added up."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.seconds = 0.0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        start = time.perf_counter()
        out = self.model(x)
        self.seconds += time.perf_counter() - start
        return out


def test_width_profile_arithmetic_against_forwards(benchmark):
    timm = pytest.importorskip("timm")
    case = CI if benchmark.disabled else {"samples": SAMPLES, "size": SIZE}
    model = TimedForward(timm.create_model("resnet18", pretrained=False, num_classes=10)).eval()
    g = torch.Generator().manual_seed(0)
    x = torch.rand(case["samples"], 3, case["size"], case["size"], generator=g)
    step = torch.randn(x.shape, generator=g)
    label = torch.zeros(case["samples"], dtype=torch.long)
    forward_seconds = []

    def run():
        model.seconds = 0.0
        width_profile(
            model,
            x,
            step,
            label,
            list(WIDTH_RADII),
            k=WIDTH_DIRECTIONS,
            generator=torch.Generator().manual_seed(1),
        )
        forward_seconds.append(model.seconds)

    benchmark.pedantic(run, rounds=3, warmup_rounds=1)
    seconds = median_seconds(benchmark)
    if seconds is None:  # --benchmark-disable: ran once, untimed
        return
    forwards = sorted(forward_seconds[1:])[len(forward_seconds[1:]) // 2]
    benchmark.extra_info.update(
        environment("cpu"),
        samples=case["samples"],
        size=case["size"],
        points_per_sample=WIDTH_DIRECTIONS * len(WIDTH_RADII),
        seconds=seconds,
        forward_seconds=forwards,
        arithmetic_seconds_per_sample=(seconds - forwards) / case["samples"],
        forward_seconds_per_sample=forwards / case["samples"],
        arithmetic_share=(seconds - forwards) / seconds,
    )
