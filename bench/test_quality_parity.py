"""Quality parity of the fast mode, in the same run as the speed benchmarks: on the shipped trained
models, precision="bf16" must match exact fp32 mode in mean RMS to target and mean final confidence
within 0.01 and in the fraction still the source class within 1 %. 100 Fashion-MNIST test images,
cross-class targets, the demo's settings (step 0.05, 400 iterations)."""

from __future__ import annotations

import pytest
import torch

import lst_fast
from conftest import environment, sync


def _walk(model, x, y, precision, device):
    r = lst_fast.traverse(
        model,
        x,
        y,
        step_size=5e-2,
        iterations=400,
        precision=precision,
        generator=torch.Generator(device).manual_seed(0),
    )
    with torch.no_grad():
        still = (model(r.images).argmax(1) == r.label).float().mean()
    rms = (r.images - y).flatten(1).pow(2).mean(1).sqrt().mean()
    return {"rms": float(rms), "confidence": float(r.confidence.mean()), "still_source": float(still)}


@pytest.mark.parametrize("name", ["cnn", "cnn-robust", "vit"])
def test_bf16_matches_exact(benchmark, device, name):
    from lst_fast.data.sources import open_image_set
    from lst_fast.evaluation.targets import round_targets
    from lst_fast.models import load_model

    data = open_image_set("fashion-mnist-sample")
    x = data.get(torch.arange(100)).to(device)
    y = x[round_targets(data.labels[:100], 1, 0)[0].to(device)]
    model = load_model(name, device)
    exact = _walk(model, x, y, "fp32", device)
    fast = {}

    def timed():
        fast.update(_walk(model, x, y, "bf16", device))
        sync(device)

    benchmark.pedantic(timed, rounds=1, warmup_rounds=0)
    benchmark.extra_info.update(
        environment(device),
        kind="parity",
        model=name,
        **{f"fp32_{k}": v for k, v in exact.items()},
        **{f"bf16_{k}": v for k, v in fast.items()},
    )
    assert abs(fast["rms"] - exact["rms"]) <= 0.01
    assert abs(fast["confidence"] - exact["confidence"]) <= 0.01
    assert abs(fast["still_source"] - exact["still_source"]) <= 0.01
