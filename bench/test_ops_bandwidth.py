"""Fused operators against (a) the same computation as separate eager torch ops (the pure-PyTorch
reference) and (b) a plain copy of the same number of bytes. Reports achieved bandwidth (bytes that
must move: each input read once, each output written once) and the fraction of copy bandwidth.

On CUDA the launches are captured once in a CUDA graph and its replays are timed with CUDA events: at
8192 x 1x28x28 the fused step is 25-40 us of GPU work, less than the public op's Python checks and the
dispatcher take on the host, which a host clock would time instead ("timing": "cuda graph, events").
Where a capture fails, the host clock with a sync is used and the row says so. The host's own cost per
call is test_host_overhead_per_call, apart.

    pytest bench/test_ops_bandwidth.py --benchmark-json=out.json && python bench/summarize.py out.json
"""

from __future__ import annotations

import statistics

import pytest
import row_groups
import torch

from lst_fast import ops
from lst_fast.backends._extension import has_native_kernel
from conftest import environment, median_seconds, sync

# (N, C, H, W): an ImageNet batch and a small-image batch; smaller on the CPU (2 cores).
SHAPES = {"cuda": [(128, 3, 224, 224), (8192, 1, 28, 28)], "cpu": [(16, 3, 224, 224), (1024, 1, 28, 28)]}
VARIANTS = ["fused", "eager", "copy"]
# the fused step on row groups that fit half the L2 (bench/row_groups.py): a design timed beside the default
STEP_VARIANTS = [*VARIANTS, "fused-row-groups"]


def _time(benchmark, device, fn, nbytes, **info):
    reps = 20 if device == "cuda" else 2  # launches per timed round, so launch gaps and sync amortize
    run, timing, event_seconds = _runner(device, fn, reps)
    benchmark.pedantic(run, rounds=10 if device == "cuda" else 5, warmup_rounds=2)
    seconds = median_seconds(benchmark)
    if seconds is None:
        return
    if event_seconds:  # the device's own time of the timed rounds (the warm-up rounds left out)
        seconds = statistics.median(event_seconds[2:] or event_seconds)
    seconds /= reps
    benchmark.extra_info.update(
        environment(device),
        bytes=nbytes,
        seconds_per_call=seconds,
        tb_per_s=nbytes / seconds / 1e12,
        timing=timing,
        **info,
    )


def _runner(device, fn, reps):
    """(run, how it is timed, the list the device times go to): on CUDA `reps` calls of fn captured in a
    graph, each run one replay between two events; elsewhere (or where capture fails) reps calls and a sync."""

    def host_run():
        for _ in range(reps):
            fn()
        sync(device)

    if device != "cuda":
        return host_run, "host clock", []
    try:
        graph = _capture(fn, reps)
    except RuntimeError as error:
        return host_run, f"host clock with a sync (capture failed: {str(error)[:80]})", []
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    event_seconds: list = []

    def graph_run():
        start.record()
        graph.replay()
        end.record()
        end.synchronize()
        event_seconds.append(start.elapsed_time(end) / 1e3)

    return graph_run, "cuda graph, events", event_seconds


def _capture(fn, reps):
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):  # warm up on a side stream, as capture requires
        for _ in range(3):
            fn()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        for _ in range(reps):
            fn()
    return graph


def _skip_native(variant, name, device):
    if variant.startswith("fused") and not has_native_kernel(name, device):
        pytest.skip(f"no compiled {name} kernel for {device}")


@pytest.mark.parametrize("variant", STEP_VARIANTS)
@pytest.mark.parametrize("shape_index", [0, 1])
def test_orthogonal_step(benchmark, device, shape_index, variant):
    _skip_native(variant, "orthogonal_step", device)
    shape = SHAPES[device][shape_index]
    x, t = torch.rand(shape, device=device), torch.rand(shape, device=device)
    g, adv = torch.randn(shape, device=device) * 1e-2, torch.zeros(shape, device=device)
    nbytes = 6 * x.numel() * x.element_size()  # read x, target, grad, adv; write adv, candidate
    if variant == "copy":
        src = torch.rand(3 * x.numel(), device=device)
        dst = torch.empty_like(src)
        fn = lambda: dst.copy_(src)  # noqa: E731  (3 tensors read + 3 written = the same bytes)
    elif variant == "fused-row-groups":
        if device != "cuda":
            pytest.skip("row groups sized to a GPU's L2 (their arithmetic is tested on the CPU)")
        group = row_groups.rows_per_group(x[0].numel() * x.element_size(), row_groups.l2_bytes(x.device), shape[0])
        kernel = torch.ops.lst_fast_kernels.orthogonal_step
        scalars = dict(step_size=1e-2, adv_step_size=2e-3, lo=0.0, hi=1.0)
        fn = lambda: row_groups.grouped_step(kernel, x, t, g, adv, group, **scalars)  # noqa: E731
    else:
        backend = "reference" if variant == "eager" else "native"
        fn = lambda: ops.orthogonal_step(x, t, g, adv, step_size=1e-2, adv_step_size=2e-3, backend=backend)  # noqa: E731
    _time(benchmark, device, fn, nbytes, op="orthogonal_step", shape=list(shape), variant=variant)


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("shape_index", [0, 1])
def test_confidence_accept(benchmark, device, shape_index, variant):
    _skip_native(variant, "confidence_accept", device)
    shape = SHAPES[device][shape_index]
    n = shape[0]
    classes = 1000 if shape[-1] >= 224 else 10  # ImageNet-size images, or Fashion-MNIST/CIFAR-size
    x, cand, g, cand_g = (torch.rand(shape, device=device) for _ in range(4))
    logits = torch.zeros(n, classes, device=device)  # uniform: p == p0, so every sample is accepted
    label = torch.zeros(n, dtype=torch.long, device=device)
    p0 = torch.full((n,), 1.0 / classes, dtype=torch.float64, device=device)
    conf = torch.zeros(n, dtype=torch.float64, device=device)
    # read the logits, the candidate and its gradient; write x and grad
    nbytes = 4 * x.numel() * x.element_size() + logits.numel() * logits.element_size()
    if variant == "copy":
        src = torch.rand(2 * x.numel(), device=device)
        dst = torch.empty_like(src)
        fn = lambda: dst.copy_(src)  # noqa: E731
    else:
        backend = "native" if variant == "fused" else "reference"
        fn = lambda: ops.confidence_accept(logits, label, p0, 0.2, x, cand, g, cand_g, conf, backend=backend)  # noqa: E731
    _time(benchmark, device, fn, nbytes, op="confidence_accept", shape=list(shape), variant=variant)


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("shape_index", [0, 1])
def test_simplex_points(benchmark, device, shape_index, variant):
    _skip_native(variant, "simplex_points", device)
    n, *rest = SHAPES[device][shape_index]
    n = max(1, n // 16)  # 66 points per triangle: the output is 22x the vertices
    vertices = torch.rand(n, 3, *rest, device=device)
    grid = [(a / 10, b / 10) for a in range(11) for b in range(11 - a)]
    weights = torch.tensor([[1 - a - b, a, b] for a, b in grid], device=device)
    out_numel = n * weights.shape[0] * vertices[0, 0].numel()
    nbytes = (vertices.numel() + out_numel) * vertices.element_size()
    if variant == "copy":
        src = torch.rand(nbytes // 8, device=device)
        dst = torch.empty_like(src)
        fn = lambda: dst.copy_(src)  # noqa: E731
    else:
        backend = "native" if variant == "fused" else "reference"
        fn = lambda: ops.simplex_points(vertices, weights, backend=backend)  # noqa: E731
    _time(benchmark, device, fn, nbytes, op="simplex_points", shape=[n, 3, *rest], variant=variant)


@pytest.mark.parametrize("path", ["public_op", "kernel", "public_op_reference"])
def test_host_overhead_per_call(benchmark, device, path):
    """The host's cost of one call on a one-element batch (the kernel's work is nil): the public op
    (lst_fast.ops.orthogonal_step: its Python checks, the dispatcher, then the kernel), the compiled kernel
    called straight (torch.ops.lst_fast_kernels.orthogonal_step), and the public op on the reference path.
    The first less the second is what the Python layer adds to every call; on a GPU it is host time that
    overlaps the device's work only while the launch queue is ahead."""
    if path != "public_op_reference":
        _skip_native("fused", "orthogonal_step", device)
    x, t, g, adv = (torch.rand(1, 1, 1, 1, device=device) for _ in range(4))
    if path == "kernel":
        kernel = torch.ops.lst_fast_kernels.orthogonal_step
        fn = lambda: kernel(x, t, g, adv, 1e-2, 2e-3, 0.0, 1.0)  # noqa: E731
    else:
        backend = "reference" if path == "public_op_reference" else "native"
        fn = lambda: ops.orthogonal_step(x, t, g, adv, step_size=1e-2, adv_step_size=2e-3, backend=backend)  # noqa: E731
    calls = 200

    def run():
        for _ in range(calls):
            fn()
        sync(device)

    benchmark.pedantic(run, rounds=20, warmup_rounds=2)
    seconds = median_seconds(benchmark)
    if seconds is None:
        return
    benchmark.extra_info.update(
        environment(device), kind="host_overhead", path=path, calls=calls, us_per_call=seconds / calls * 1e6
    )
