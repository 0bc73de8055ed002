"""Where an evaluation's time goes: its three stages timed on the same models, the way `lst-fast eval` runs
them, so that bench/RESULTS.md can project each stage for the paper's ImageNet protocol.

    pool       the pool stage as the evaluation builds it (`pool_stage` below:
               lst_fast.evaluation.runner.own_pool_indices, a seeded scan that stops when the pool is full);
               images decoded and forwarded per second, and how many it read. Plus decode alone (JPEG
               decode, resize, crop at 224 px, as ImageNet val needs) through a DataLoader with 0 and N
               worker processes.
    lst        lst_fast.traverse in the evaluation's settings (EVALUATION_SETTINGS, fp32 and bf16), at k and
               3k iterations: img-iter/s, the steady rate being batch * 2k / (t_3k - t_k).
    triangles  lst_fast.geometry.triangle_confidence as the evaluation calls it (66 points, n = 10): model
               forwards per second.
    evaluation `run_evaluation` end to end on a folder of JPEG files (every stage through the data path).

Models: the shipped Fashion-MNIST CNN on the real test set, and ResNet-50 (timm, random weights: speed
only) at a small size on the CPU; the cuda cases run at 224 px (they skip without a GPU). The JPEG files
are written to a temporary folder: shipped Fashion-MNIST images upscaled to 500x375 RGB with noise, about
100 KB each, near ImageNet val's average file.

    pytest bench/test_eval_stages.py -k cpu --benchmark-json=out.json
"""

from __future__ import annotations

import os
import statistics
import time
from pathlib import Path
from typing import Callable, Dict, Optional, Tuple

import pytest
import torch
from torch import Tensor

from lst_fast.data.image_set import ImageSet
from lst_fast.data.preprocessing import IMAGENET_EVAL
from lst_fast.data.sources import open_image_set
from lst_fast.evaluation.config import EvalConfig
from lst_fast.geometry import triangle_confidence
from lst_fast.run_environment import RunEnvironment
from lst_fast.walk.settings import EVALUATION_SETTINGS
from lst_fast.walk.traversal import traverse
from conftest import environment, median_seconds, sync

DEVICES = ["cpu", "cuda"]  # cuda cases skip without a GPU
MODEL_SPECS = {"fashion_cnn": "cnn", "resnet50": "timm:resnet50"}
# model -> device -> sizes. image: input px; pool: images the pool stage scans (the whole Fashion-MNIST
# test set for the CNN; JPEG files for ResNet-50); lst: (batch, k); triangles: sources. The CPU sizes fit
# 2 shared cores; the GPU sizes are the evaluation's (a chunk of 256 sources, batch 128 at 224 px).
CASES: Dict[str, Dict[str, dict]] = {
    "fashion_cnn": {
        "cpu": {"image": 28, "pool": None, "lst": (128, 4), "triangles": 64},
        "cuda": {"image": 28, "pool": None, "lst": (256, 20), "triangles": 256},
    },
    "resnet50": {
        "cpu": {"image": 128, "pool": 16, "lst": (2, 2), "triangles": 1},
        "cuda": {"image": 224, "pool": 512, "lst": (128, 10), "triangles": 32},
    },
}
# Under --benchmark-disable (CI runs each case once, untimed) the cases shrink to these sizes.
CI_CASE = {"image": 28, "pool": None, "lst": (32, 2), "triangles": 8}
DECODE_IMAGES = {"cpu": 96, "cuda": 1024}  # JPEG files decoded per timed round (CI: one batch)
DECODE_BATCH = 32
WORKERS = [0, 2, 8, 16]
PRECISIONS = ["fp32", "bf16"]
SPANS = {"k": 1, "3k": 3}


def pool_stage(model: torch.nn.Module, data: ImageSet, cfg: EvalConfig, device: str) -> Tuple[Tensor, int]:
    """The pool stage under test: (the pool, how many images it decoded and forwarded). The evaluation's
    builder scans the data set in a seeded order and stops when the pool is full (until 2026-12-04 it
    scanned the whole data set), so the count is what it read, and the rate stays images decoded and
    forwarded per second."""
    from lst_fast.evaluation.runner import own_pool_indices

    forwarded = []

    def counting(images: Tensor) -> Tensor:
        forwarded.append(images.shape[0])
        return model(images)

    return own_pool_indices(counting, data, cfg, RunEnvironment(device=device)), sum(forwarded)


def case_sizes(benchmark, model_name: str, device: str) -> dict:
    sizes = CASES[model_name][device]
    return {**sizes, **CI_CASE, "image": sizes["image"], "pool": sizes["pool"] and 4} if benchmark.disabled else sizes


def _skip_without(device: str) -> None:
    if device == "cuda" and not torch.cuda.is_available():
        pytest.skip("needs a GPU")


_models: dict = {}


def described_model(name: str, device: str):
    """The evaluation's model (lst_fast.models.resolve_model: the shipped weights, or timm random init)."""
    from lst_fast.models import resolve_model

    key = (name, device)
    if key not in _models:
        torch.manual_seed(0)
        _models.clear()  # one model in memory at a time
        _models[key] = resolve_model(MODEL_SPECS[name], device, pretrained=False)
    return _models[key]


def fashion_test_set() -> ImageSet:
    try:
        return open_image_set("fashion-mnist")
    except FileNotFoundError as error:
        pytest.skip(f"the Fashion-MNIST test set is not installed ({error})")


_jpeg_folders: Dict[int, Path] = {}


def jpeg_folder(tmp_path_factory, count: int) -> Path:
    """`count` JPEG files in class folders 0..9 (the shipped Fashion-MNIST sample, upscaled to 500x375 RGB,
    tinted, with noise, quality 90: about 100 KB each), written once per size."""
    if count in _jpeg_folders:
        return _jpeg_folders[count]
    import numpy as np
    from PIL import Image

    from lst_fast.data.fashion_mnist import load_sample

    images, labels = load_sample()
    root = tmp_path_factory.mktemp(f"jpeg{count}")
    rng = np.random.default_rng(0)
    tint = np.array([1.0, 0.85, 0.7], dtype=np.float32)
    for i in range(count):
        j = i % len(labels)
        big = Image.fromarray(images[j, 0].numpy()).convert("RGB").resize((500, 375), Image.BICUBIC)
        pixels = np.asarray(big, dtype=np.float32) * tint + rng.normal(0, 20, (375, 500, 3))
        folder = root / str(int(labels[j]))
        folder.mkdir(exist_ok=True)
        Image.fromarray(pixels.clip(0, 255).astype(np.uint8)).save(folder / f"{i:05d}.jpg", quality=90)
    _jpeg_folders[count] = root
    return root


class CpuClock:
    """Wraps the timed function and keeps each call's process CPU seconds (all of this process's threads;
    not the DataLoader's worker processes): on a shared machine they vary less than the wall clock."""

    def __init__(self, fn: Callable[..., None]) -> None:
        self.fn, self.seconds = fn, []

    def __call__(self, *args, **kwargs) -> None:
        start = time.process_time()
        self.fn(*args, **kwargs)
        self.seconds.append(time.process_time() - start)

    def median(self) -> float:
        return statistics.median(self.seconds[1:] or self.seconds)  # after the warm-up round


ROUNDS = {"cpu": 2, "cuda": 5}  # timed rounds after one warm-up round (the CPU: 2 shared cores)


def _run(benchmark, device: str, fn: Callable[..., None], **kw) -> CpuClock:
    clock = CpuClock(fn)
    benchmark.pedantic(clock, rounds=ROUNDS[device], warmup_rounds=1, **kw)
    return clock


def _record(benchmark, device: str, clock: CpuClock, count: int, unit: str, **info) -> None:
    """extra_info: the environment, wall seconds (median of the timed rounds), CPU seconds, and `unit`
    (count per wall second)."""
    seconds = median_seconds(benchmark)
    if seconds is None:  # --benchmark-disable: the code ran once, untimed
        return
    benchmark.extra_info.update(
        environment(device),
        seconds=seconds,
        cpu_seconds=clock.median(),
        count=count,
        **{unit: count / seconds, f"{unit}_cpu": count / clock.median()},
        **info,
    )


@pytest.mark.parametrize("model_name", list(CASES))
@pytest.mark.parametrize("device", DEVICES)
def test_pool_stage(benchmark, tmp_path_factory, device, model_name):
    """The pool stage as the evaluation builds it: images decoded and forwarded per second."""
    _skip_without(device)
    case = case_sizes(benchmark, model_name, device)
    described = described_model(model_name, device)
    if case["pool"] is None:
        data = open_image_set("fashion-mnist-sample") if benchmark.disabled else fashion_test_set()
    else:
        folder = jpeg_folder(tmp_path_factory, case["pool"])
        data = open_image_set(f"imagefolder:{folder}", preprocessing=described.preprocessing.with_size(case["image"]))
    cfg = EvalConfig(model=MODEL_SPECS[model_name], num_samples=1000, seed=0)
    model = described.classifier()
    scanned = []

    def run():
        scanned.append(pool_stage(model, data, cfg, device)[1])
        sync(device)

    clock = _run(benchmark, device, run)
    _record(
        benchmark,
        device,
        clock,
        kind="eval_stage",
        stage="pool",
        model=model_name,
        data=data.name if case["pool"] is None else f"{case['pool']} JPEG files",
        image_size=case["image"],
        count=scanned[-1],
        unit="images_per_s",
    )


@pytest.mark.parametrize("workers", WORKERS, ids=[f"workers{w}" for w in WORKERS])
@pytest.mark.parametrize("device", DEVICES)
def test_decode(benchmark, tmp_path_factory, device, workers):
    """JPEG decode + resize 256 + center crop 224 (ImageNet's evaluation transform) alone, per second, through
    a DataLoader with `workers` worker processes: what feeding a pool scan of ImageNet val costs."""
    _skip_without(device)
    if workers > (os.cpu_count() or 1):
        pytest.skip(f"{workers} workers on {os.cpu_count()} cores")
    count = DECODE_BATCH if benchmark.disabled else DECODE_IMAGES[device]
    data = open_image_set(f"imagefolder:{jpeg_folder(tmp_path_factory, count)}", preprocessing=IMAGENET_EVAL)

    class Files(torch.utils.data.Dataset):
        def __len__(self) -> int:
            return len(data)

        def __getitem__(self, i: int) -> Tensor:
            return data.get(torch.tensor([i]))[0]

    # persistent workers: the timed rounds measure decoding, not starting processes
    loader = torch.utils.data.DataLoader(
        Files(), batch_size=DECODE_BATCH, num_workers=workers, persistent_workers=workers > 0
    )

    def run():
        for batch in loader:
            assert batch.shape[1:] == (3, 224, 224)

    clock = _run(benchmark, device, run)
    _record(
        benchmark,
        device,
        clock,
        kind="eval_stage",
        stage="decode",
        workers=workers,
        image_size=224,
        count=len(data),
        unit="images_per_s",
    )


def stage_images(model_name: str, device: str, n: int, small: bool) -> Tuple[Tensor, Tensor, Optional[Tensor]]:
    """Sources, other images and labels: the first n Fashion-MNIST test images (their own labels; `small`:
    the shipped sample) for the CNN; random images at the case's size for ResNet-50 (random weights:
    labels None)."""
    if model_name == "fashion_cnn":
        data = open_image_set("fashion-mnist-sample") if small else fashion_test_set()
        index = torch.arange(n)
        x = data.get(index)
        return x.to(device), x.roll(1, 0).to(device), data.labels[index].to(device)
    size = CASES[model_name][device]["image"]
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(2, n, 3, size, size, generator=gen)
    return x[0].to(device), x[1].to(device), None


@pytest.mark.parametrize("span", list(SPANS))
@pytest.mark.parametrize("precision", PRECISIONS)
@pytest.mark.parametrize("model_name", list(CASES))
@pytest.mark.parametrize("device", DEVICES)
def test_lst_stage(benchmark, device, model_name, precision, span):
    """traverse as the evaluation calls it, on one chunk: img-iter/s."""
    _skip_without(device)
    batch, k = case_sizes(benchmark, model_name, device)["lst"]
    iterations = k * SPANS[span]
    model = described_model(model_name, device).classifier()
    xs, xt, label = stage_images(model_name, device, batch, benchmark.disabled)
    settings = EVALUATION_SETTINGS.replace(iterations=iterations, precision=precision)

    def run():
        generator = torch.Generator(device=device).manual_seed(0)
        traverse(model, xs, xt, settings, label=label, generator=generator)
        sync(device)

    clock = _run(benchmark, device, run)
    _record(
        benchmark,
        device,
        clock,
        kind="eval_stage",
        stage="lst",
        model=model_name,
        precision=precision,
        batch=batch,
        image_size=xs.shape[-1],
        iterations=iterations,
        k=k,
        span=span,
        count=batch * iterations,
        unit="img_iter_per_s",
    )


@pytest.mark.parametrize("precision", PRECISIONS)
@pytest.mark.parametrize("model_name", list(CASES))
@pytest.mark.parametrize("device", DEVICES)
def test_triangle_stage(benchmark, device, model_name, precision):
    """triangle_confidence as the evaluation calls it (one pair of rounds, n = 10: 66 points per source):
    model forwards per second."""
    _skip_without(device)
    sources = case_sizes(benchmark, model_name, device)["triangles"]
    model = described_model(model_name, device).classifier()
    xs, xt, label = stage_images(model_name, device, sources, benchmark.disabled)
    if label is None:
        with torch.no_grad():
            label = model(xs).argmax(1)
    end1, end2 = (0.5 * xs + 0.5 * xt), xt

    def run():
        triangle_confidence(model, xs, end1, end2, label, n=10, precision=precision)
        sync(device)

    clock = _run(benchmark, device, run)
    _record(
        benchmark,
        device,
        clock,
        kind="eval_stage",
        stage="triangles",
        model=model_name,
        precision=precision,
        sources=sources,
        image_size=xs.shape[-1],
        count=sources * 66,
        unit="forwards_per_s",
    )


# The whole evaluation on JPEG files: every stage reads its images through the data path, as on ImageNet.
EVAL_FILES = {"cpu": 48, "cuda": 512}
EVAL_SETTINGS = {"cpu": dict(num_samples=12, iterations=5), "cuda": dict(num_samples=256, iterations=50)}


@pytest.mark.parametrize("model_name", ["fashion_cnn"])
@pytest.mark.parametrize("device", DEVICES)
def test_evaluation_on_files(benchmark, tmp_path_factory, device, model_name):
    """run_evaluation end to end, shipped CNN, a folder of JPEG files, 5 rounds (10 triangle pairs), the
    paper's triangle grid: seconds per evaluation, from a fresh output folder each round."""
    _skip_without(device)
    from lst_fast.evaluation.runner import run_evaluation

    files, settings = EVAL_FILES[device], EVAL_SETTINGS[device]
    if benchmark.disabled:
        files, settings = 16, dict(num_samples=4, iterations=2)
    folder = jpeg_folder(tmp_path_factory, files)
    cfg = EvalConfig(model="cnn", data=f"imagefolder:{folder}", rounds=5, **settings)
    outs = iter(range(10**6))
    base = tmp_path_factory.mktemp("evaluations")

    def fresh_folder():
        return (cfg, base / str(next(outs))), {"env": RunEnvironment(device=device, progress=False)}

    opened = []

    def run(cfg, out, **kw):
        from PIL import Image

        # Count the image files opened (each one decoded): the stages' reads through the data path.
        counted, real_open = [0], Image.open

        def counting_open(*args, **kwargs):
            counted[0] += 1
            return real_open(*args, **kwargs)

        Image.open = counting_open
        try:
            run_evaluation(cfg, out, **kw)
        finally:
            Image.open = real_open
        opened.append(counted[0])
        sync(device)

    clock = _run(benchmark, device, run, setup=fresh_folder)
    _record(
        benchmark,
        device,
        clock,
        kind="eval_stage",
        stage="evaluation",
        model="fashion_cnn",
        files=files,
        files_opened=opened[-1],
        rounds=cfg.rounds,
        iterations=cfg.lst.iterations,
        count=cfg.num_samples,
        unit="sources_per_s",
    )
