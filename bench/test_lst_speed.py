"""LST throughput side by side: the paper's loop, one pass, the expert loop and lst_fast in each mode, on
the shipped Fashion-MNIST CNN, ResNet-50, DeiT-S and WRN-28-10 (timm / lst_fast, random init: speed only).
Each (model, method) runs k and 3k iterations ("span" k and 3k), timed separately. summarize.py turns the
pair into the steady rate, img-iter/s = batch * 2k / (t_3k - t_k), and the set-up seconds per call
(t_k less k iterations at that rate), with the ratios to the paper loop. A single span would count the
per-call set-up (the bf16 copy, the end check, a graph capture) as iteration time.

    pytest bench/test_lst_speed.py --benchmark-json=out.json && python bench/summarize.py out.json
"""

from __future__ import annotations

import pytest
import torch

from lst_fast.commands.bench import MODES, mode_runner
from conftest import environment, median_seconds, sync

# model -> device -> (batch, image size, k: the short span's iterations, k of the fp32 loops). The CPU
# sizes fit 2 cores. On the GPU the fp32 loops (paper, one pass, lst-fp32: no TF32, compute-bound) take
# a smaller k: their set-up is one forward, which k = 4 still separates, and at k = 10 they would take
# most of the speed step's time (docs/NOTES.md, "Owed on a GPU").
CASES = {
    "fashion_cnn": {"cpu": (200, 28, 15, 15), "cuda": (8192, 28, 20, 10)},
    "resnet50": {"cpu": (2, 128, 3, 3), "cuda": (128, 224, 10, 4)},
    "deit_small": {"cpu": (2, 128, 3, 3), "cuda": (128, 224, 10, 4)},
    "wrn28_10": {"cpu": (4, 32, 3, 3), "cuda": (256, 32, 10, 4)},
}
FP32_METHODS = ("paper", "one_pass", "lst_fp32")
SPANS = {"k": 1, "3k": 3}
# Timed rounds per span: the GPU's rates vary little between rounds (and its time is scarce: docs/NOTES.md),
# the shared CPU's more.
ROUNDS = {"cpu": 3, "cuda": 2}
_warmed: set = set()  # (model, method, device) whose untimed warm-up call has run in this process
# Every method that runs torch.compile has "compile" in its name, so `-k "not compile"` skips them all.
METHODS = [mode.replace("-", "_") for mode in MODES]  # `lst-fast bench`'s modes, as pytest ids
_models = {}


def build_model(name: str, size: int, device: str) -> torch.nn.Module:
    key = (name, size, device)
    if key not in _models:
        torch.manual_seed(0)
        if name == "fashion_cnn":
            from lst_fast.models import load_model

            model = load_model("cnn")
        elif name == "wrn28_10":
            from lst_fast.models.wide_resnet import wrn28_10

            model = wrn28_10()
        else:
            import timm

            timm_name = {"resnet50": "resnet50", "deit_small": "deit_small_patch16_224"}[name]
            kwargs = {"img_size": size} if name == "deit_small" else {}
            model = timm.create_model(timm_name, pretrained=False, **kwargs)
        _models.clear()  # one model in memory at a time
        _models[key] = model.eval().to(device)
    return _models[key]


def runner(method: str, model: torch.nn.Module, device: str):
    """The loop `lst-fast bench` times for the same mode (its names use hyphens)."""
    return mode_runner(method.replace("_", "-"), model, device)


@pytest.mark.parametrize("span", list(SPANS))
@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("model_name", list(CASES))
def test_lst_throughput(benchmark, device, model_name, method, span):
    if method.endswith("graph") and device != "cuda":
        pytest.skip("CUDA graphs need a GPU")
    batch, size, k, k_fp32 = CASES[model_name][device]
    k = k_fp32 if method in FP32_METHODS else k
    iterations = k * SPANS[span]
    channels = 1 if model_name == "fashion_cnn" else 3
    model = build_model(model_name, size, device)
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(batch, channels, size, size, generator=gen).to(device)
    y = torch.rand(batch, channels, size, size, generator=gen).to(device)
    run = runner(method, model, device)

    def timed():
        run(model, x, y, iterations)
        sync(device)

    # One untimed call per (model, method) compiles (the expert loop, compile_model) and warms cuDNN; the
    # pair's other span needs none. Each timed round still pays lst_fast's per-call set-up, which the two
    # spans separate.
    first = (model_name, method, device) not in _warmed
    _warmed.add((model_name, method, device))
    benchmark.pedantic(timed, rounds=ROUNDS[device], warmup_rounds=1 if first else 0)
    seconds = median_seconds(benchmark)
    if seconds is None:
        return
    benchmark.extra_info.update(
        environment(device),
        kind="lst_speed",
        model=model_name,
        method=method,
        batch=batch,
        image_size=size,
        iterations=iterations,
        k=k,
        span=span,
        seconds=seconds,
        img_iter_per_s=batch * iterations / seconds,
    )
