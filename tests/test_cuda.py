"""CUDA-only checks: unwritten outputs, CUDA graph capture, stream use, and traverse on GPU vs CPU.

Skipped without a GPU; bench/gpu_check.sh runs them on one.
"""

from __future__ import annotations

import math

import pytest
import torch

import lst_fast
from lst_fast import ops
from lst_fast.backends._extension import has_native_kernel
from conftest import tiny_cnn

pytestmark = pytest.mark.skipif(
    not (torch.cuda.is_available() and has_native_kernel("orthogonal_step", "cuda")),
    reason="needs a CUDA GPU and the compiled CUDA kernels",
)


def poison_allocator(nbytes: int) -> None:
    """Fill a block of the caching allocator with NaN and free it, so that the next allocations of the
    same size reuse NaN-filled memory and any element a kernel forgets to write shows up."""
    block = torch.full((nbytes // 4 + 1024,), float("nan"), device="cuda")
    del block


@pytest.mark.parametrize("shape", [(3, 3, 224, 224), (257, 1, 28, 28), (2, 5, 7, 3), (1, 1, 1, 1)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16, torch.float64])
def test_every_output_element_is_written(shape, dtype):
    gen = torch.Generator(device="cuda").manual_seed(0)
    x, t = (torch.rand(shape, device="cuda", generator=gen).to(dtype) for _ in range(2))
    g = (torch.randn(shape, device="cuda", generator=gen) * 1e-2).to(dtype)
    adv = torch.zeros(shape, device="cuda", dtype=dtype)
    nbytes = x.numel() * x.element_size()
    poison_allocator(nbytes)
    out = ops.orthogonal_step(x, t, g, adv, step_size=0.05, adv_step_size=2e-3, backend="native")
    assert not out.isnan().any()
    verts = torch.rand(shape[0], 3, *shape[1:], device="cuda").to(dtype)
    poison_allocator(nbytes * 4)
    pts = ops.simplex_points(verts, torch.rand(4, 3, device="cuda"), backend="native")
    assert not pts.isnan().any()


def test_fresh_random_inputs_match_reference_many_times():
    for seed in range(20):
        gen = torch.Generator(device="cuda").manual_seed(seed)
        n = int(torch.randint(1, 64, (1,), generator=gen, device="cuda"))
        d = int(torch.randint(1, 40000, (1,), generator=gen, device="cuda"))
        x, t = torch.rand(n, d, device="cuda", generator=gen), torch.rand(n, d, device="cuda", generator=gen)
        g = torch.randn(n, d, device="cuda", generator=gen)
        adv = torch.rand(n, d, device="cuda", generator=gen) * 4e-3 - 2e-3
        a1, a2 = adv.clone(), adv.clone()
        out = ops.orthogonal_step(x, t, g, a1, step_size=0.05, adv_step_size=2e-3, backend="native")
        ref = ops.orthogonal_step(x, t, g, a2, step_size=0.05, adv_step_size=2e-3, backend="reference")
        assert torch.equal(out, ref)  # float64 sums in another order: equal once rounded to float32
        assert torch.equal(a1, a2)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float64])
@pytest.mark.parametrize("shape", [(5, 3, 224, 224), (3, 9000), (2, 3, 61, 67)])
def test_large_row_path_matches_reference(dtype, shape):
    """Rows over 8192 elements take the two-kernel chunked path."""
    gen = torch.Generator(device="cuda").manual_seed(1)
    x, t = (torch.rand(shape, device="cuda", generator=gen).to(dtype) for _ in range(2))
    g = (torch.randn(shape, device="cuda", generator=gen) * 1e-2).to(dtype)
    adv = (torch.rand(shape, device="cuda", generator=gen) * 4e-3 - 2e-3).to(dtype)
    a1, a2 = adv.clone(), adv.clone()
    poison_allocator(x.numel() * x.element_size())
    out = ops.orthogonal_step(x, t, g, a1, step_size=0.05, adv_step_size=2e-3, backend="native")
    ref = ops.orthogonal_step(x, t, g, a2, step_size=0.05, adv_step_size=2e-3, backend="reference")
    if dtype == torch.float64:  # the float64 sums' order differs from the reference's
        torch.testing.assert_close(out, ref, rtol=1e-14, atol=1e-14)
        torch.testing.assert_close(a1, a2, rtol=1e-14, atol=1e-14)
    else:  # rounded from float64 once: bit-identical
        assert torch.equal(out, ref) and torch.equal(a1, a2)
    again = ops.orthogonal_step(x, t, g, adv.clone(), step_size=0.05, adv_step_size=2e-3, backend="native")
    assert torch.equal(out, again)  # deterministic


def misaligned(shape, dtype, gen, low=0.0, high=1.0):
    """A tensor of `shape` whose data starts one element into its buffer: no 16-byte alignment, so the
    kernels must take their scalar path (and must not read or write past either end)."""
    n = math.prod(shape)
    flat = (torch.rand(n + 1, device="cuda", generator=gen) * (high - low) + low).to(dtype)
    view = flat[1:].view(shape)
    assert view.data_ptr() % 16 != 0
    return view


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16, torch.float64])
@pytest.mark.parametrize("shape", [(3, 1000), (3, 8193), (2, 70000), (2, 4_200_000)])
def test_misaligned_and_very_long_rows_match_reference(dtype, shape):
    """Every op on buffers that start one element off alignment, with rows up to 4.2M elements (the
    register-row and chunked paths, and more chunks than one block holds), against the reference."""
    gen = torch.Generator(device="cuda").manual_seed(7)
    x, t = misaligned(shape, dtype, gen), misaligned(shape, dtype, gen)
    g, adv = misaligned(shape, dtype, gen, -1e-2, 1e-2), misaligned(shape, dtype, gen, -2e-3, 2e-3)
    a1, a2 = misaligned(shape, dtype, gen).copy_(adv), adv.clone()  # the written tensor misaligned too
    poison_allocator(x.numel() * x.element_size())
    out = ops.orthogonal_step(x, t, g, a1, step_size=0.05, adv_step_size=2e-3, backend="native")
    ref = ops.orthogonal_step(x, t, g, a2, step_size=0.05, adv_step_size=2e-3, backend="reference")
    exact = dtype != torch.float64  # float64: the sums' order differs from the reference's
    if exact:
        assert torch.equal(out, ref) and torch.equal(a1, a2)
    else:
        torch.testing.assert_close(out, ref, rtol=1e-14, atol=1e-14)
        torch.testing.assert_close(a1, a2, rtol=1e-14, atol=1e-14)

    n = shape[0]
    logits = torch.randn(n, 10, device="cuda", generator=gen)
    label = torch.randint(0, 10, (n,), device="cuda", generator=gen)
    p0 = torch.rand(n, device="cuda", dtype=torch.float64, generator=gen)
    results = []
    for backend in ("native", "reference"):
        xs, gs, conf = misaligned(shape, dtype, gen).copy_(x), misaligned(shape, dtype, gen).copy_(g), p0 * 0.5
        accepted = ops.confidence_accept(logits, label, p0, 0.2, xs, out, gs, a1, conf, backend=backend)
        results.append((accepted, xs, gs))
    for got, want in zip(*results, strict=True):
        assert torch.equal(got, want)

    weights = torch.rand(5, 2, device="cuda", generator=gen)
    verts = misaligned((n, 2, shape[1] // 2), dtype, gen)
    pts = ops.simplex_points(verts, weights, backend="native")
    assert torch.equal(pts, ops.simplex_points(verts, weights, backend="reference"))


def test_deterministic_across_runs():
    x, t = torch.rand(8, 3, 224, 224, device="cuda"), torch.rand(8, 3, 224, 224, device="cuda")
    g = torch.randn_like(x)
    outs = [ops.orthogonal_step(x, t, g, torch.zeros_like(x), step_size=0.05, adv_step_size=2e-3) for _ in range(3)]
    assert torch.equal(outs[0], outs[1]) and torch.equal(outs[1], outs[2])


def test_ops_capture_in_a_cuda_graph():
    n, shape = 16, (3, 32, 32)
    x, t = torch.rand(n, *shape, device="cuda"), torch.rand(n, *shape, device="cuda")
    g, cg = torch.randn_like(x) * 1e-2, torch.randn_like(x) * 1e-2
    adv = torch.zeros_like(x)
    logits = torch.randn(n, 10, device="cuda")
    label = torch.randint(0, 10, (n,), device="cuda")
    p0 = torch.rand(n, device="cuda", dtype=torch.float64)
    conf = torch.zeros(n, device="cuda", dtype=torch.float64)
    state = [x.clone(), g.clone(), adv.clone(), conf.clone()]

    def step(xs, gs, advs, confs):
        cand = torch.ops.lst_fast.orthogonal_step(xs, t, gs, advs, 0.05, 2e-3, 0.0, 1.0)
        return torch.ops.lst_fast.confidence_accept(logits, label, p0, 0.2, xs, cand, gs, cg, confs)

    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):  # warm up on a side stream, as graph capture requires
        step(*[s.clone() for s in state])
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    captured = [s.clone() for s in state]
    with torch.cuda.graph(graph):
        accepted = step(*captured)
    for s, c in zip(state, captured, strict=True):
        c.copy_(s)
    graph.replay()
    eager = [s.clone() for s in state]
    want = step(*eager)
    torch.cuda.synchronize()
    assert torch.equal(accepted, want)
    for a, b in zip(captured, eager, strict=True):
        assert torch.equal(a, b)


def test_ops_run_on_the_current_stream():
    stream = torch.cuda.Stream()
    x = torch.rand(64, 3, 64, 64, device="cuda")
    t, g = torch.rand_like(x), torch.randn_like(x)
    torch.cuda.synchronize()
    with torch.cuda.stream(stream):
        out = ops.orthogonal_step(x, t, g, torch.zeros_like(x), step_size=0.05, adv_step_size=2e-3)
        ref = ops.orthogonal_step(x, t, g, torch.zeros_like(x), step_size=0.05, adv_step_size=2e-3, backend="reference")
    stream.synchronize()
    assert torch.equal(out, ref)


def test_mixed_devices_are_rejected():
    x = torch.rand(2, 1, 4, 4, device="cuda")
    with pytest.raises(RuntimeError, match="all tensors must be on one device|is on"):
        torch.ops.lst_fast.orthogonal_step(x, x.cpu(), x, x.clone(), 0.1, 0.0, 0.0, 1.0)


def test_traverse_on_cuda_matches_cpu():
    model = tiny_cnn(channels=3, size=16, scale=12)
    gen = torch.Generator().manual_seed(0)
    x, y = torch.rand(32, 3, 16, 16, generator=gen), torch.rand(32, 3, 16, 16, generator=gen)
    noise_free = dict(iterations=60, step_size=0.05, threshold=0.05, init_noise=0.0)
    cpu = lst_fast.traverse(model, x, y, **noise_free)
    gpu = lst_fast.traverse(model.cuda(), x.cuda(), y.cuda(), **noise_free)
    assert gpu.images.device.type == "cuda"
    # fp32 rounding differs between cuDNN and the CPU; a decision right at the threshold may flip, so
    # allow a few samples to part ways and require the rest to agree to fp32 accuracy.
    per_sample = (gpu.images.cpu() - cpu.images).flatten(1).abs().max(1).values
    assert (per_sample < 1e-4).float().mean() >= 0.9, per_sample
    assert ((gpu.confidence.cpu() - cpu.confidence).abs() < 1e-4).float().mean() >= 0.9


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_graph_replay_gives_the_eager_iterates(monkeypatch, precision):
    # Deterministic cuDNN algorithms, so any difference would come from the graph itself.
    monkeypatch.setattr(torch.backends.cudnn, "deterministic", True)
    model = tiny_cnn(channels=3, size=16, scale=12).cuda()
    gen = torch.Generator().manual_seed(1)
    x, y = (torch.rand(64, 3, 16, 16, generator=gen).cuda() for _ in range(2))
    settings = dict(iterations=40, step_size=0.05, threshold=0.05, precision=precision, record_every=10)
    eager = lst_fast.traverse(model, x, y, generator=torch.Generator("cuda").manual_seed(2), **settings)
    graphed = lst_fast.traverse(model, x, y, generator=torch.Generator("cuda").manual_seed(2), graph=True, **settings)
    assert (eager.accepted_steps > 0).any() and (eager.accepted_steps < 40).any()
    for name, value in eager.tensors().items():
        assert torch.equal(getattr(graphed, name), value), name


def test_graph_with_fewer_iterations_than_the_warmup():
    model = tiny_cnn(channels=3, size=16, scale=12).cuda()
    x, y = torch.rand(4, 3, 16, 16, device="cuda"), torch.rand(4, 3, 16, 16, device="cuda")
    for iterations in (0, 1, 3, 4):
        r = lst_fast.traverse(model, x, y, iterations=iterations, graph=True, init_noise=0.0)
        assert bool((r.accepted_steps <= iterations).all())


def test_automatic_batch_size_fits_and_matches_explicit_batches(monkeypatch):
    monkeypatch.setattr(torch.backends.cudnn, "deterministic", True)
    model = tiny_cnn(channels=3, size=16, scale=12).cuda()
    x, y = torch.rand(300, 3, 16, 16, device="cuda"), torch.rand(300, 3, 16, 16, device="cuda")
    auto = lst_fast.traverse(model, x, y, iterations=5, init_noise=0.0)
    used = auto.config["batch_size_used"]
    assert 1 <= used <= 300
    again = lst_fast.traverse(model, x, y, iterations=5, init_noise=0.0, batch_size=used)
    assert torch.equal(again.images, auto.images)


def test_bf16_on_cuda_keeps_fp32_iterates_and_parity_with_exact():
    model = tiny_cnn(channels=3, size=16, scale=12).cuda()
    gen = torch.Generator().manual_seed(3)
    x, y = (torch.rand(128, 3, 16, 16, generator=gen).cuda() for _ in range(2))
    exact = lst_fast.traverse(model, x, y, iterations=60, step_size=0.05, init_noise=0.0)
    fast = lst_fast.traverse(model, x, y, iterations=60, step_size=0.05, init_noise=0.0, precision="bf16")
    assert fast.images.dtype == torch.float32 and fast.config["model_copy"]["channels_last"]
    rms = lambda r: float((r.images - y).flatten(1).pow(2).mean(1).sqrt().mean())  # noqa: E731
    assert abs(rms(fast) - rms(exact)) <= 0.01
    assert abs(float(fast.confidence.mean() - exact.confidence.mean())) <= 0.01


def test_staged_on_device_copies_every_chunk_intact():
    from lst_fast.evaluation.runner import staged_on_device

    chunks = [torch.rand(64, 3, 32, 32) for _ in range(4)]
    for i, (job, (moved,)) in enumerate(staged_on_device(list(range(4)), lambda j: [chunks[j]], "cuda")):
        assert job == i and moved.device.type == "cuda"
        assert torch.equal(moved.cpu(), chunks[i])


@pytest.mark.parametrize("graph", [False, True])
def test_host_syncs_do_not_grow_with_iterations(monkeypatch, graph):
    """The walk's syncs are counted; the bf16 end check's walk-back (its syncs depend on the data) is not."""
    import warnings

    from lst_fast.walk.observers import EndCheck

    finish = EndCheck.finish

    def finish_uncounted(self, state):
        mode = torch.cuda.get_sync_debug_mode()
        torch.cuda.set_sync_debug_mode("default")
        try:
            return finish(self, state)
        finally:
            torch.cuda.set_sync_debug_mode(mode)

    monkeypatch.setattr(EndCheck, "finish", finish_uncounted)
    model = tiny_cnn(channels=3, size=16, scale=12).cuda()
    x, y = torch.rand(16, 3, 16, 16, device="cuda"), torch.rand(16, 3, 16, 16, device="cuda")
    lst_fast.traverse(model, x, y, iterations=5, precision="bf16", graph=graph)  # build the copy, warm up
    syncs = []
    for iterations in (5, 40):
        torch.cuda.set_sync_debug_mode("warn")
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                lst_fast.traverse(model, x, y, iterations=iterations, precision="bf16", graph=graph)
        finally:
            torch.cuda.set_sync_debug_mode("default")
        syncs.append(sum("synchroniz" in str(w.message) for w in caught))
    assert syncs[0] == syncs[1], syncs


def _wide_conv_model() -> torch.nn.Module:
    """About 100 MB of activations per 224 px image (512 channels at full resolution)."""
    return torch.nn.Sequential(
        torch.nn.Conv2d(3, 512, 3, padding=1),
        torch.nn.ReLU(),
        torch.nn.AdaptiveAvgPool2d(1),
        torch.nn.Flatten(),
        torch.nn.Linear(512, 10),
    ).cuda()


def test_real_out_of_memory_names_a_batch_size_and_automatic_batches_fit():
    free, _ = torch.cuda.mem_get_info()
    per_image = 3 * 512 * 224 * 224 * 4  # conv output, ReLU output and its gradient: a lower bound
    n = int(2 * free / per_image) + 1  # twice what could fit
    model = _wide_conv_model()
    x = torch.rand(n, 3, 224, 224, device="cuda")
    with pytest.raises(torch.OutOfMemoryError, match=r"batch_size=\d+ or smaller"):
        lst_fast.traverse(model, x, x.flip(0), iterations=1, init_noise=0.0, batch_size=n)
    torch.cuda.empty_cache()
    r = lst_fast.traverse(model, x, x.flip(0), iterations=1, init_noise=0.0)  # automatic: fits
    assert r.config["batch_size_used"] < n and r.images.shape == x.shape


def test_bf16_copy_folds_batchnorm_on_the_gpu():
    """The folding check compares fp32 logits; with TF32 on (torch's default for cuDNN) it would see
    TF32's error instead of the folding's and keep BatchNorm unfolded."""
    import timm

    model = timm.create_model("resnet18", pretrained=False, num_classes=10).cuda().eval()
    x = torch.rand(4, 3, 64, 64, device="cuda")
    r = lst_fast.traverse(model, x, x.flip(0), iterations=2, precision="bf16")
    assert r.config["model_copy"]["folded_batchnorms"] == 20


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_graph_with_several_equal_batches_keeps_inputs_and_matches_eager(monkeypatch, precision):
    """batch_size below N: every batch after the first replays the first one's capture."""
    monkeypatch.setattr(torch.backends.cudnn, "deterministic", True)
    model = tiny_cnn(channels=3, size=16, scale=12).cuda()
    gen = torch.Generator().manual_seed(4)
    x, y = (torch.rand(48, 3, 16, 16, generator=gen).cuda() for _ in range(2))
    label = model(x).argmax(1)
    y_before, label_before = y.clone(), label.clone()
    settings = dict(iterations=12, step_size=0.05, threshold=0.05, precision=precision, batch_size=16, record_every=4)
    eager = lst_fast.traverse(model, x, y, label=label, generator=torch.Generator("cuda").manual_seed(5), **settings)
    graphed = lst_fast.traverse(
        model, x, y, label=label, generator=torch.Generator("cuda").manual_seed(5), graph=True, **settings
    )
    assert torch.equal(y, y_before) and torch.equal(label, label_before)
    for name, value in eager.tensors().items():
        assert torch.equal(getattr(graphed, name), value), name


def test_probability_outputs_warn_on_cuda():
    model = torch.nn.Sequential(tiny_cnn(channels=3, size=16), torch.nn.Softmax(1)).cuda()
    x = torch.rand(4, 3, 16, 16, device="cuda")
    with pytest.warns(UserWarning, match="look like probabilities"):
        lst_fast.traverse(model, x, x.flip(0), iterations=1)
