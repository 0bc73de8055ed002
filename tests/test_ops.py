"""Native operators against the pure-PyTorch reference, opcheck, and their error messages."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from lst_fast import ops
from lst_fast.backends import reference
from lst_fast.backends._extension import has_native_kernel
from conftest import DEVICES

DTYPES = [torch.float32, torch.float64, torch.float16, torch.bfloat16]
LAYOUTS = ["contiguous", "channels_last", "strided"]
# Rows of every kernel path: tiny, one CPU chunk (16,384 elements) and CUDA register row (8,192) and
# above each, with a remainder chunk; N >= 4 keeps ordinary samples next to the edge cases.
SHAPES = [
    (1, 1, 1, 1),
    (2, 3, 5, 7),
    (5, 1, 28, 28),
    (4, 3, 32, 32),
    (4, 3, 100, 100),
    (4, 17),
    (0, 3, 4, 4),
    (4, 8193),
    (4, 16384),
    (5, 16385),
    (4, 40000),
]

# Every backend this machine can run: (device, backend).
BACKENDS = [(d, "reference") for d in DEVICES] + [
    (d, "native") for d in DEVICES if has_native_kernel("orthogonal_step", torch.device(d).type)
]


def native_or_skip(name, device):
    if not has_native_kernel(name, torch.device(device).type):
        pytest.skip(f"no compiled {name} kernel for {device}")


def assert_step_equal(out, ref, dtype):
    """Native and reference steps are bit-identical except in float64, where the per-sample double sums
    <g, v> and <g, g> are added in another order (the kernels' 4 lanes and chunks vs torch.sum), so
    the coefficient, and through it the output, may differ in the last bit."""
    if dtype == torch.float64:
        torch.testing.assert_close(out, ref, rtol=0, atol=1e-14, equal_nan=True)
    else:
        torch.testing.assert_close(out, ref, rtol=0, atol=0, equal_nan=True)


def make(shape, dtype, device, layout, gen, low=0.0, high=1.0):
    """A tensor of `shape` with the requested memory layout and values in [low, high]."""
    t = torch.rand(shape, generator=gen, dtype=torch.float64) * (high - low) + low
    if layout == "strided":  # every other column of a wider tensor: not dense
        wide = torch.zeros(*shape[:-1], 2 * shape[-1], dtype=torch.float64) if len(shape) else t
        wide[..., ::2] = t
        t = wide.to(device=device, dtype=dtype)[..., ::2]
        return t
    t = t.to(device=device, dtype=dtype)
    if layout == "channels_last" and t.dim() == 4:
        t = t.contiguous(memory_format=torch.channels_last)
    return t


def step_inputs(shape, dtype, device, layout, seed=0):
    """Ordinary samples; with N >= 4, samples 0-2 are edge cases (a zero gradient, values at the bounds,
    v = 0) and samples 3... stay ordinary, so every shape has real projections."""
    gen = torch.Generator().manual_seed(seed)
    x = make(shape, dtype, device, layout, gen)
    target = make(shape, dtype, device, layout, gen)
    grad = make(shape, dtype, device, layout, gen, -1e-2, 1e-2)
    adv = make(shape, dtype, device, layout, gen, -2e-3, 2e-3)
    if shape[0] >= 4:
        grad[0].zero_()
        x[1][..., ::2] = 0.0
        x[1][..., 1::3] = 1.0
        target[2].copy_(x[2])
    return x, target, grad, adv


STEP_KW = dict(step_size=0.05, adv_step_size=2e-3, bounds=(0.0, 1.0))


def run_step(backend, x, target, grad, adv, **kw):
    adv = adv.clone()
    out = ops.orthogonal_step(x, target, grad, adv, **{**STEP_KW, **kw}, backend=backend)
    return out, adv


def float64_step(x, target, grad, adv, step_size, adv_step_size, lo, hi):
    """The step of docs/ALGORITHM.md written plainly in float64 (no rounding to the data type in between)."""
    n = x.shape[0]
    x, target, grad, adv = (t.to(torch.float64).reshape(n, -1) for t in (x, target, grad, adv))
    v = target - x
    gg = (grad * grad).sum(1, keepdim=True)
    coef = torch.where(gg > 0, (grad * v).sum(1, keepdim=True) / gg.clamp_min(1e-300), 0.0)
    new_adv = (adv + adv_step_size / 2 * grad).clamp(-adv_step_size, adv_step_size)
    return (x + step_size * (v - coef * grad) - new_adv).clamp(lo, hi), new_adv


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("layout", LAYOUTS)
def test_orthogonal_step_matches_reference(device, dtype, shape, layout):
    native_or_skip("orthogonal_step", device)
    if layout == "strided" and shape[-1] == 1 and len(shape) == 4:
        layout = "contiguous"
    x, target, grad, adv = step_inputs(shape, dtype, device, layout)
    out, adv_out = run_step("native", x, target, grad, adv)
    ref, adv_ref = run_step("reference", x, target, grad, adv)
    assert out.shape == x.shape and out.dtype == dtype and out.device == x.device
    assert_step_equal(out, ref, dtype)
    assert torch.equal(adv_out, adv_ref)
    if out.numel():
        assert out.min() >= 0 and out.max() <= 1
    if shape[0] >= 4:  # the ordinary samples moved off x and their projection is not trivial
        moved = (out[3:] - x[3:]).flatten(1).abs().amax(1)
        assert (moved > 0).all()


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize(
    "layouts", [("channels_last", "contiguous"), ("contiguous", "strided"), ("strided", "strided")]
)
def test_kernels_on_mixed_layouts_match_the_reference(device, layouts):
    """Tensors that share no row-dense layout take the kernels' fallback (contiguous work copies, the
    step's output written into a buffer of its own, then copied back): the results are the reference's,
    in every element of the output's own layout."""
    native_or_skip("orthogonal_step", device)
    x_layout, other = layouts
    shape = (4, 3, 9, 11)
    x, _, _, _ = step_inputs(shape, torch.float32, device, x_layout, seed=5)
    _, target, grad, adv = step_inputs(shape, torch.float32, device, other, seed=6)
    out, adv_out = run_step("native", x, target, grad, adv)
    ref, adv_ref = run_step("reference", x, target, grad, adv)
    assert out.stride() == torch.empty_like(x).stride()  # the layout empty_like gives, as before
    assert torch.equal(out, ref) and torch.equal(adv_out, adv_ref)
    logits, label, p0, tensors, confidence = accept_inputs(4, shape[1:], torch.float32, device, other, seed=7)
    tensors[0] = make(shape, torch.float32, device, x_layout, torch.Generator().manual_seed(8))
    drop = torch.tensor([0.0, 0.5, 0.0, 0.1], dtype=torch.float64, device=device)  # under / over the threshold
    p0 = reference.class_probability(logits, label).to(p0.dtype) + drop
    got = run_accept("native", logits, label, p0, tensors, confidence)
    want = run_accept("reference", logits, label, p0, tensors, confidence)
    assert got[0].any() and not got[0].all(), "the sample needs both outcomes"
    for a, b in zip(got[:3], want[:3], strict=True):
        assert torch.equal(a, b)
    assert_confidence_equal(got[3], want[3])


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(3, 3, 100, 100), (3, 40000), (6, 1, 28, 28)])
def test_reference_step_matches_a_float64_formula(device, dtype, shape):
    """The reference (the oracle of the kernels, and the fallback) against docs/ALGORITHM.md in plain float64; runs
    without the extension. Tolerance: the reference rounds every operation to the opmath type (float32
    below float64), then the result to `dtype`: a few roundings of `dtype` and of float32."""
    gen = torch.Generator().manual_seed(7)
    x, target = (torch.rand(shape, generator=gen, dtype=torch.float64).to(dtype) for _ in range(2))
    grad = (torch.randn(shape, generator=gen, dtype=torch.float64) * 1e-2).to(dtype)
    adv = ((torch.rand(shape, generator=gen, dtype=torch.float64) * 4 - 2) * 1e-3).to(dtype)
    x, target, grad, adv = (t.to(device) for t in (x, target, grad, adv))
    out, adv_out = run_step("reference", x, target, grad, adv)
    want, want_adv = float64_step(x, target, grad, adv, 0.05, 2e-3, 0.0, 1.0)
    eps = torch.finfo(dtype).eps
    tol = 1e-13 if dtype == torch.float64 else 2 * eps + 8 * torch.finfo(torch.float32).eps
    torch.testing.assert_close(out.double().reshape(shape[0], -1), want, rtol=0, atol=tol)
    torch.testing.assert_close(adv_out.double().reshape(shape[0], -1), want_adv, rtol=0, atol=2e-3 * 2 * eps)


@pytest.mark.parametrize("device,backend", BACKENDS)
def test_orthogonal_step_zero_gradient_moves_along_target(device, backend):
    x = torch.full((2, 1, 3, 3), 0.25, device=device)
    target = torch.full_like(x, 0.75)
    out = ops.orthogonal_step(
        x,
        target,
        torch.zeros_like(x),
        torch.zeros_like(x),
        step_size=0.5,
        adv_step_size=1e-3,
        bounds=(0.0, 1.0),
        backend=backend,
    )
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out, torch.full_like(x, 0.5))


@pytest.mark.parametrize("device,backend", BACKENDS)
@pytest.mark.parametrize("shape", [(4, 3, 8, 8), (3, 3, 100, 100)])
def test_orthogonal_step_projection_is_orthogonal_to_gradient(device, backend, shape):
    gen = torch.Generator().manual_seed(1)
    x = (torch.rand(shape, generator=gen, dtype=torch.float64) * 0.5 + 0.25).to(device)
    target = (torch.rand(shape, generator=gen, dtype=torch.float64) * 0.5 + 0.25).to(device)
    grad = torch.randn(shape, generator=gen, dtype=torch.float64).to(device)
    out = ops.orthogonal_step(
        x, target, grad, torch.zeros_like(x), step_size=0.01, adv_step_size=0.0, bounds=(0.0, 1.0), backend=backend
    )
    inner = ((out - x) * grad).flatten(1).sum(1)
    assert inner.abs().max() < 1e-12
    assert ((out - x).flatten(1).norm(dim=1) > 1e-4).all()  # it did move


def accept_inputs(n, shape, dtype, device, layout, seed=0, conf_dtype=torch.float64, logit_dtype=torch.float32):
    gen = torch.Generator().manual_seed(seed)
    logits = (torch.randn(n, 7, generator=gen) * 3).to(device=device, dtype=logit_dtype)
    label = torch.randint(0, 7, (n,), generator=gen).to(device)
    p0 = torch.rand(n, generator=gen, dtype=torch.float64).to(device=device, dtype=conf_dtype)
    if n > 2:
        logits[2, 0] = float("nan")  # a non-finite candidate is never accepted
    tensors = [make((n, *shape), dtype, device, layout, gen) for _ in range(4)]
    confidence = torch.rand(n, generator=gen, dtype=torch.float64).to(device=device, dtype=conf_dtype)
    return logits, label, p0, tensors, confidence


def run_accept(backend, logits, label, p0, tensors, confidence, threshold=0.2):
    x, cand, grad, cand_grad = (t.clone() for t in tensors)
    conf = confidence.clone()
    accepted = ops.confidence_accept(logits, label, p0, threshold, x, cand, grad, cand_grad, conf, backend=backend)
    return accepted, x, grad, conf


def assert_confidence_equal(got, want):
    """float32 confidences are bit-identical; float64 ones may differ in the last bits: the kernels take
    exp() from libm and add the row in order, torch uses its vectorized exp and its own sum order."""
    if got.dtype == torch.float64:
        torch.testing.assert_close(got, want, rtol=2e-15, atol=0, equal_nan=True)
    else:
        torch.testing.assert_close(got, want, rtol=0, atol=0, equal_nan=True)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(
    "n,shape", [(1, (1, 1, 1)), (9, (3, 5, 7)), (6, (1, 28, 28)), (3, (3, 64, 64)), (0, (2, 2, 2))]
)
@pytest.mark.parametrize("layout", LAYOUTS)
def test_confidence_accept_matches_reference(device, dtype, n, shape, layout):
    native_or_skip("confidence_accept", device)
    inputs = accept_inputs(n, shape, dtype, device, layout)
    got = run_accept("native", *inputs)
    want = run_accept("reference", *inputs)
    assert got[0].dtype == torch.bool and got[0].shape == (n,)
    assert torch.equal(got[0], want[0])
    assert torch.equal(got[1], want[1]) and torch.equal(got[2], want[2])
    assert_confidence_equal(got[3], want[3])
    if n > 2:
        assert not got[0][2]
    if n > 3:
        assert got[0].any() and not got[0].all(), "the sample needs both outcomes"


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize(
    "conf_dtype,logit_dtype",
    [
        (torch.float32, torch.float32),
        (torch.float32, torch.bfloat16),
        (torch.float64, torch.float64),
        (torch.float64, torch.float16),
    ],
)
def test_confidence_accept_dtype_combinations(device, conf_dtype, logit_dtype):
    native_or_skip("confidence_accept", device)
    inputs = accept_inputs(
        16, (2, 4, 4), torch.float32, device, "contiguous", seed=5, conf_dtype=conf_dtype, logit_dtype=logit_dtype
    )
    got, want = run_accept("native", *inputs), run_accept("reference", *inputs)
    assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1]) and torch.equal(got[2], want[2])
    assert_confidence_equal(got[3], want[3])


def threshold_cases(device, conf_dtype, dtype):
    """Rows whose drop p0 - p is exactly the threshold, one ulp either side, and far either side.

    Logits equal within a row give p = 1/K exactly (exp(0) = 1, a sum of ones), so the drop is exact
    in float64 and the rule `p0 - p < threshold` decides each row without rounding doubt."""
    rows = []  # (K, p0, threshold, accepted by the rule)
    for k, threshold in ((2, 0.25), (4, 0.5), (8, 0.125), (1, 0.0)):
        p = 1.0 / k
        exact = p + threshold  # representable: sums of powers of two
        below, above = math.nextafter(exact, 0.0), math.nextafter(exact, 2.0)
        if conf_dtype == torch.float32:
            below = float(torch.tensor(exact, dtype=torch.float32).nextafter(torch.tensor(0.0)))
            above = float(torch.tensor(exact, dtype=torch.float32).nextafter(torch.tensor(2.0)))
        rows += [
            (k, exact, threshold, False),
            (k, below, threshold, True),
            (k, above, threshold, False),
            (k, p, threshold, threshold > 0),
            (k, p + threshold + 0.01, threshold, False),
        ]
    n, kmax = len(rows), 8
    logits = torch.full((n, kmax), -float("inf"))
    for i, (k, *_rest) in enumerate(rows):
        logits[i, :k] = 1.5  # the other classes have probability 0 (exp(-inf))
    label = torch.tensor([i % k for i, (k, *_r) in enumerate(rows)])
    p0 = torch.tensor([r[1] for r in rows], dtype=torch.float64).to(conf_dtype)
    expected = torch.tensor([r[3] for r in rows])
    gen = torch.Generator().manual_seed(3)
    tensors = [torch.rand(n, 3, 40, 40, generator=gen).to(dtype) for _ in range(4)]
    conf = torch.full((n,), 0.5, dtype=conf_dtype)
    prob = torch.tensor([1.0 / r[0] for r in rows], dtype=torch.float64)
    return [t.to(device) for t in (logits, label, p0)], [r[2] for r in rows], tensors, conf, expected, prob


@pytest.mark.parametrize("device,backend", BACKENDS)
@pytest.mark.parametrize("conf_dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_confidence_accept_at_the_threshold(device, backend, conf_dtype, dtype):
    """A drop exactly at the threshold is refused (strict `<`); x, grad and confidence after the accept
    are the candidate's where accepted and untouched elsewhere, on every backend."""
    (logits, label, p0), thresholds, tensors, conf, expected, prob = threshold_cases(device, conf_dtype, dtype)
    x, cand, grad, cand_grad = (t.to(device) for t in tensors)
    x0, grad0, conf0 = x.clone(), grad.clone(), conf.to(device)
    accepted = torch.zeros(len(thresholds), dtype=torch.bool, device=device)
    xs, gs, cs = x.clone(), grad.clone(), conf0.clone()
    for th in sorted(set(thresholds)):  # one call per threshold, on the rows that use it
        rows = torch.tensor([t == th for t in thresholds], device=device)
        idx = rows.nonzero().squeeze(1)
        xi, gi, ci = xs[idx].clone(), gs[idx].clone(), cs[idx].clone()
        acc = ops.confidence_accept(
            logits[idx], label[idx], p0[idx], th, xi, cand[idx], gi, cand_grad[idx], ci, backend=backend
        )
        accepted[idx], xs[idx], gs[idx], cs[idx] = acc, xi, gi, ci
    assert torch.equal(accepted.cpu(), expected)
    mask = expected.to(device)[:, None, None, None]
    assert torch.equal(xs, torch.where(mask, cand, x0))
    assert torch.equal(gs, torch.where(mask, cand_grad, grad0))
    want_conf = torch.where(expected, prob.to(conf_dtype), conf.cpu())
    assert torch.equal(cs.cpu(), want_conf)


@pytest.mark.parametrize("device,backend", BACKENDS)
def test_reference_accept_matches_a_float64_formula(device, backend):
    """The accept against softmax in float64 written plainly; runs without the extension."""
    gen = torch.Generator().manual_seed(9)
    n = 64
    logits = torch.randn(n, 10, generator=gen, dtype=torch.float64) * 4
    label = torch.randint(0, 10, (n,), generator=gen)
    p0 = torch.rand(n, generator=gen, dtype=torch.float64)
    x, cand, grad, cand_grad = (torch.rand(n, 2, 5, 5, generator=gen) for _ in range(4))
    conf = torch.rand(n, generator=gen, dtype=torch.float64)
    p = torch.softmax(logits, 1)[torch.arange(n), label]
    want = p0 - p < 0.1
    margin = ((p0 - p) - 0.1).abs() > 1e-12
    args = [t.to(device) for t in (logits, label, p0)]
    xs, gs, cs = x.to(device), grad.to(device), conf.to(device)
    acc = ops.confidence_accept(*args, 0.1, xs, cand.to(device), gs, cand_grad.to(device), cs, backend=backend)
    acc = acc.cpu()
    assert torch.equal(acc[margin], want[margin]) and 0 < int(acc.sum()) < n
    m = acc[:, None, None, None]
    assert torch.equal(xs.cpu(), torch.where(m, cand, x)) and torch.equal(gs.cpu(), torch.where(m, cand_grad, grad))
    torch.testing.assert_close(cs.cpu(), torch.where(acc, p, conf), rtol=1e-14, atol=0)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("k", [1, 2, 3])
@pytest.mark.parametrize("shape", [(1, 1, 1), (3, 5, 7), (1, 28, 28), (3, 100, 100)])
def test_simplex_points_matches_reference(device, dtype, k, shape):
    native_or_skip("simplex_points", device)
    gen = torch.Generator().manual_seed(k)
    vertices = torch.rand(3, k, *shape, generator=gen).to(device=device, dtype=dtype)
    weights = torch.rand(5, k, generator=gen).to(device)
    weights = weights / weights.sum(1, keepdim=True)
    out = ops.simplex_points(vertices, weights)
    ref = ops.simplex_points(vertices, weights, backend="reference")
    assert out.shape == (15, *shape) and out.dtype == dtype
    torch.testing.assert_close(out, ref, rtol=0, atol=0)


@pytest.mark.parametrize("device,backend", BACKENDS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_simplex_points_match_a_float64_formula(device, backend, dtype):
    """Against einsum in float64; runs without the extension. Tolerance: K products and sums rounded to
    the opmath type (float32 below float64)."""
    gen = torch.Generator().manual_seed(4)
    vertices = torch.rand(4, 3, 2, 70, 70, generator=gen, dtype=torch.float64)  # 9,800 elements per vertex
    weights = torch.rand(6, 3, generator=gen, dtype=torch.float64)
    out = ops.simplex_points(vertices.to(device, dtype), weights.to(device), backend=backend)
    want = torch.einsum("pk,nk...->np...", weights, vertices).reshape(24, 2, 70, 70)
    tol = 8 * torch.finfo(dtype).eps * 3
    torch.testing.assert_close(out.cpu().double(), want, rtol=0, atol=tol)


@pytest.mark.parametrize("device", DEVICES)
def test_simplex_points_layouts_and_empty(device):
    native_or_skip("simplex_points", device)
    gen = torch.Generator().manual_seed(0)
    vertices = torch.rand(4, 3, 2, 6, 6, generator=gen).to(device)[:, :, :, ::2]  # not contiguous
    weights = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.2, 0.3, 0.5]], dtype=torch.float64).to(device)
    out = ops.simplex_points(vertices, weights)
    torch.testing.assert_close(out, ops.simplex_points(vertices, weights, backend="reference"), rtol=0, atol=0)
    assert torch.equal(out.view(4, 3, 2, 3, 6)[:, 0], vertices[:, 0])  # a vertex weight gives the vertex
    assert ops.simplex_points(vertices[:0], weights).shape == (0, 2, 3, 6)
    assert ops.simplex_points(vertices, weights[:0]).shape == (0, 2, 3, 6)


# -- opcheck: schema, fake kernel, autograd registration, dynamic shapes -------------------------------


def opcheck_samples(device):
    for dtype, layout in itertools.product(
        [torch.float32, torch.bfloat16, torch.float64], ["contiguous", "channels_last"]
    ):
        x, target, grad, adv = step_inputs((3, 2, 5, 6), dtype, device, layout, seed=11)
        yield "orthogonal_step", (x, target, grad, adv, 0.05, 2e-3, 0.0, 1.0)
    for dtype in [torch.float32, torch.float16]:
        logits, label, p0, tensors, conf = accept_inputs(5, (2, 3, 3), dtype, device, "contiguous", seed=12)
        yield "confidence_accept", (logits, label, p0, 0.2, *tensors, conf)
    for k in (2, 3):
        vertices = torch.rand(2, k, 3, 4, 4, device=device)
        yield "simplex_points", (vertices, torch.rand(6, k, device=device))
    x, target, grad, adv = step_inputs((0, 2, 3, 3), torch.float32, device, "contiguous")
    yield "orthogonal_step", (x, target, grad, adv, 0.05, 2e-3, 0.0, 1.0)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("namespace", ["lst_fast", "lst_fast_kernels"])
def test_opcheck(device, namespace):
    """The public ops (checks, then the kernel or the reference) and, where built, the kernels themselves."""
    if namespace == "lst_fast_kernels":
        for name in ("orthogonal_step", "confidence_accept", "simplex_points"):
            native_or_skip(name, device)
    for name, args in opcheck_samples(device):
        torch.library.opcheck(getattr(getattr(torch.ops, namespace), name).default, args)


@pytest.mark.parametrize("device", DEVICES)
def test_ops_under_torch_compile(device):

    def step_and_accept(x, target, grad, adv, logits, label, p0, cand_grad, conf):
        cand = torch.ops.lst_fast.orthogonal_step(x, target, grad, adv, 0.05, 2e-3, 0.0, 1.0)
        return torch.ops.lst_fast.confidence_accept(logits, label, p0, 0.2, x, cand, grad, cand_grad, conf)

    x, target, grad, adv = step_inputs((4, 1, 6, 6), torch.float32, device, "contiguous", seed=2)
    logits, label, p0, (_, _, _, cand_grad), conf = accept_inputs(4, (1, 6, 6), torch.float32, device, "contiguous")
    eager_args = [t.clone() for t in (x, target, grad, adv, logits, label, p0, cand_grad, conf)]
    compiled_args = [t.clone() for t in eager_args]
    want = step_and_accept(*eager_args)
    got = torch.compile(step_and_accept, backend="aot_eager", fullgraph=True)(*compiled_args)
    assert torch.equal(got, want)
    for a, b in zip(compiled_args, eager_args, strict=True):  # the in-place updates happen under compile too
        torch.testing.assert_close(a, b, rtol=0, atol=0, equal_nan=True)
    # The fake kernels run the same checks while torch.compile traces.
    bad = [t.clone() for t in eager_args]
    bad[2] = bad[2].double()
    with pytest.raises(RuntimeError, match="lst_fast::orthogonal_step: grad has dtype Double but x has dtype Float"):
        torch.compile(step_and_accept, backend="aot_eager", fullgraph=True)(*bad)


# -- property tests ------------------------------------------------------------------------------------
# Derandomized (the same examples on every run, so a failure reproduces); batches of 1 to 4 samples (the
# empty batch has its own cases above); rows from 1 element to beyond two CPU chunks.

ROW_SIZES = st.one_of(st.integers(1, 2000), st.sampled_from([8191, 8192, 8193, 16383, 16384, 16385, 32769, 40000]))


@settings(max_examples=40, deadline=None, derandomize=True)
@given(
    n=st.integers(1, 4),
    d=ROW_SIZES,
    split=st.sampled_from([None, 2, 3]),
    dtype=st.sampled_from(DTYPES),
    step_size=st.floats(1e-4, 1.0),
    adv_step_size=st.sampled_from([0.0, 1e-3, 0.05]),
    scale=st.sampled_from([0.0, 1e-40, 1e-30, 1e-3, 1.0, 1e3]),  # 1e-40: float32 subnormal gradients
    at_bounds=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_orthogonal_step_property(n, d, split, dtype, step_size, adv_step_size, scale, at_bounds, seed):
    native_or_skip("orthogonal_step", "cpu")
    gen = torch.Generator().manual_seed(seed)
    shape = (n, d) if split is None or d % split else (n, split, d // split)
    x = torch.rand(shape, generator=gen)
    x = (x.round() if at_bounds else x).to(dtype)  # every value exactly at lo or hi
    target = torch.rand(shape, generator=gen).to(dtype)
    grad = (torch.randn(shape, generator=gen, dtype=torch.float64) * scale).to(dtype)
    adv = ((torch.rand(shape, generator=gen) * 2 - 1) * adv_step_size).to(dtype)
    kw = dict(step_size=step_size, adv_step_size=adv_step_size, bounds=(0.0, 1.0))
    out, adv_out = run_step("native", x, target, grad, adv, **kw)
    ref, adv_ref = run_step("reference", x, target, grad, adv, **kw)
    assert_step_equal(out, ref, dtype)
    assert torch.equal(adv_out, adv_ref)
    assert not out.isnan().any()


@settings(max_examples=30, deadline=None, derandomize=True)
@given(
    n=st.integers(1, 6),
    k=st.integers(1, 4),
    p=st.integers(1, 5),
    d=st.one_of(st.integers(1, 300), st.sampled_from([4095, 4096, 4097, 9000])),
    dtype=st.sampled_from(DTYPES),
    seed=st.integers(0, 2**16),
)
def test_simplex_points_property(n, k, p, d, dtype, seed):
    native_or_skip("simplex_points", "cpu")
    gen = torch.Generator().manual_seed(seed)
    vertices = torch.rand(n, k, d, generator=gen).to(dtype)
    weights = torch.rand(p, k, generator=gen, dtype=torch.float64)
    torch.testing.assert_close(
        ops.simplex_points(vertices, weights),
        ops.simplex_points(vertices, weights, backend="reference"),
        rtol=0,
        atol=0,
    )


@settings(max_examples=30, deadline=None, derandomize=True)
@given(
    n=st.integers(1, 8),
    k=st.integers(1, 12),
    threshold=st.floats(0.0, 1.0),
    spread=st.floats(0.0, 40.0),
    seed=st.integers(0, 2**16),
)
def test_confidence_accept_property(n, k, threshold, spread, seed):
    native_or_skip("confidence_accept", "cpu")
    gen = torch.Generator().manual_seed(seed)
    logits = torch.randn(n, k, generator=gen) * spread
    label = torch.randint(0, k, (n,), generator=gen)
    p0 = torch.rand(n, generator=gen, dtype=torch.float64)
    tensors = [torch.rand(n, 2, 3, generator=gen) for _ in range(4)]
    conf = torch.zeros(n, dtype=torch.float64)
    got = run_accept("native", logits, label, p0, tensors, conf, threshold)
    want = run_accept("reference", logits, label, p0, tensors, conf, threshold)
    p = reference.class_probability(logits, label)
    near = ((p0 - p) - threshold).abs() < 1e-12  # decisions this close may differ by the last bit of p
    assert torch.equal(got[0][~near], want[0][~near])
    rows = ~near[:, None, None]
    assert torch.equal(got[1] * rows, want[1] * rows) and torch.equal(got[2] * rows, want[2] * rows)
    assert_confidence_equal(got[3][~near], want[3][~near])


# -- errors -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("device", DEVICES)
def test_the_dispatcher_ops_check_their_arguments(device):
    """torch.ops.lst_fast.* called directly run the same checks as the wrappers (native kernel or not)."""
    step = torch.ops.lst_fast.orthogonal_step
    x = torch.rand(2, 1, 4, 4, device=device)
    with pytest.raises(RuntimeError, match="target has shape"):
        step(x, torch.rand(2, 1, 4, 5, device=device), x, x.clone(), 0.1, 0.0, 0.0, 1.0)
    with pytest.raises(RuntimeError, match="grad has dtype"):
        step(x, x, x.double(), x.clone(), 0.1, 0.0, 0.0, 1.0)
    with pytest.raises(RuntimeError, match="x must be float32"):
        step(x.int(), x.int(), x.int(), x.int(), 0.1, 0.0, 0.0, 1.0)
    with pytest.raises(RuntimeError, match="lo < hi"):
        step(x, x, x, x.clone(), 0.1, 0.0, 1.0, 0.0)
    with pytest.raises(RuntimeError, match="adv_step_size"):
        step(x, x, x, x.clone(), 0.1, -1.0, 0.0, 1.0)
    with pytest.raises(RuntimeError, match="overlap|memory location"):
        step(x, x, x, x, 0.1, 0.0, 0.0, 1.0)
    accept = torch.ops.lst_fast.confidence_accept
    logits, label, p0 = (
        torch.rand(2, 3, device=device),
        torch.zeros(2, dtype=torch.long, device=device),
        torch.rand(2, device=device),
    )
    args = (x.clone(), x.clone(), x.clone(), x.clone(), p0.clone())
    with pytest.raises(RuntimeError, match="logits must have shape"):
        accept(logits[:1], label, p0, 0.2, *args)
    with pytest.raises(RuntimeError, match="label must be int64"):
        accept(logits, label.int(), p0, 0.2, *args)
    with pytest.raises(RuntimeError, match="confidence must match p0"):
        accept(logits, label, p0, 0.2, *args[:4], p0.double())
    with pytest.raises(RuntimeError, match="weights must have shape"):
        torch.ops.lst_fast.simplex_points(torch.rand(2, 3, 4, device=device), torch.rand(5, 2, device=device))
    with pytest.raises(RuntimeError, match="at least one vertex"):
        torch.ops.lst_fast.simplex_points(torch.rand(2, 0, 4, device=device), torch.rand(5, 0, device=device))
    # An out-of-range label is not an error (it needs the label values): see
    # test_out_of_range_label_is_never_accepted_on_every_backend.


def _kernel_refusals(device):
    """Arguments that would take a compiled kernel outside its tensors' memory, one mistake each."""
    x = torch.rand(3, 2, 4, device=device)

    def step(*tensors):
        return torch.ops.lst_fast_kernels.orthogonal_step(*tensors, 0.1, 0.0, 0.0, 1.0)

    yield "orthogonal_step", lambda: step(x, x[:, :1].clone(), x.clone(), x.clone())  # target too small
    yield "orthogonal_step", lambda: step(x, x.clone(), x.double(), x.clone())  # grad of wider elements
    yield "orthogonal_step", lambda: step(x, x.clone(), x.clone(), x.half())  # adv of narrower elements
    yield "orthogonal_step", lambda: step(*(x.int() for _ in range(4)))  # no float dispatch
    yield "orthogonal_step", lambda: step(*(x[0, 0, 0].clone() for _ in range(4)))  # no batch dimension
    logits, label, p0 = (
        torch.rand(3, 5, device=device),
        torch.zeros(3, dtype=torch.long, device=device),
        torch.rand(3, device=device),
    )

    def accept(lg, lb, p, *tensors, conf=None):  # tensors: x, candidate, grad, candidate_grad
        tensors = tensors or tuple(x.clone() for _ in range(4))
        return torch.ops.lst_fast_kernels.confidence_accept(
            lg, lb, p, 0.2, *tensors, p.clone() if conf is None else conf
        )

    yield "confidence_accept", lambda: accept(logits[:2], label, p0)  # fewer rows than samples
    yield "confidence_accept", lambda: accept(logits[:, :0], label, p0)  # no class
    yield "confidence_accept", lambda: accept(logits, label[:2], p0)  # too few labels
    yield "confidence_accept", lambda: accept(logits, label.int(), p0)  # labels read as int64
    yield "confidence_accept", lambda: accept(logits, label, p0.half())  # p0 read as float or double
    yield "confidence_accept", lambda: accept(logits, label, p0, conf=p0.double())  # confidence written as p0's type
    yield "confidence_accept", lambda: accept(logits, label, p0, x.clone(), x[:, :1].clone(), x.clone(), x.clone())
    yield "confidence_accept", lambda: accept(logits, label, p0, x.clone(), x.clone(), x.clone(), x.double())
    simplex = torch.ops.lst_fast_kernels.simplex_points
    yield "simplex_points", lambda: simplex(torch.rand(2, 3, 4, device=device), torch.rand(5, 2, device=device))
    yield "simplex_points", lambda: simplex(torch.rand(2, 0, 4, device=device), torch.rand(5, 0, device=device))
    yield "simplex_points", lambda: simplex(torch.rand(2, device=device), torch.rand(5, 2, device=device))
    yield "simplex_points", lambda: simplex(torch.rand(2, 3, 4, device=device).long(), torch.rand(5, 3, device=device))


@pytest.mark.parametrize("device", DEVICES)
def test_kernel_ops_refuse_what_would_leave_their_memory(device):
    """The compiled kernels called directly (past the checks of lst_fast.backends.op_checks) still refuse every
    argument that would make them read or write out of bounds: a RuntimeError, never a crash."""
    native_or_skip("orthogonal_step", device)
    for name, call in _kernel_refusals(device):
        with pytest.raises(RuntimeError, match=f"lst_fast_kernels::{name}: .* torch.ops.lst_fast.{name}, which names"):
            call()


def test_kernel_schemas_match_the_public_ones():
    """The public ops (lst_fast/ops.py) and the compiled kernels (csrc/lst_fast.cpp) share one signature."""
    native_or_skip("orthogonal_step", "cpu")
    for name, schema in ops.SCHEMAS.items():
        public = getattr(torch.ops.lst_fast, name).default._schema
        kernel = getattr(torch.ops.lst_fast_kernels, name).default._schema
        assert str(public) == "lst_fast::" + schema
        assert str(kernel) == "lst_fast_kernels::" + schema


# -- one contract per operator: the same arguments get the same answer on every backend ----------------


def _step_args(device):
    gen = torch.Generator().manual_seed(21)
    x = torch.rand(3, 2, 4, 4, generator=gen).to(device)
    return x, torch.rand(x.shape, generator=gen).to(device), torch.rand(x.shape, generator=gen).to(device) * 1e-2


STEP_REJECTS = [  # (change to (x, target, grad, adv, kwargs), message)
    (lambda x, t, g, a, kw: (x, t, g, a, {**kw, "step_size": float("nan")}), "step_size must be finite"),
    (lambda x, t, g, a, kw: (x, t, g, a, {**kw, "step_size": float("inf")}), "step_size must be finite"),
    (lambda x, t, g, a, kw: (x, t, g, a, {**kw, "adv_step_size": -1e-3}), r"adv_step_size must be finite and >= 0"),
    (lambda x, t, g, a, kw: (x, t, g, a, {**kw, "adv_step_size": float("nan")}), "adv_step_size must be finite"),
    (lambda x, t, g, a, kw: (x, t, g, a, {**kw, "bounds": (1.0, 0.0)}), "lo < hi"),
    (lambda x, t, g, a, kw: (x, t, g, a, {**kw, "bounds": (0.0, float("nan"))}), "lo < hi"),
    (lambda x, t, g, a, kw: (x, t, g.double(), a, kw), "grad has dtype Double but x has dtype Float"),
    (lambda x, t, g, a, kw: (x, t.half(), g, a, kw), "target has dtype Half but x has dtype Float"),
    (lambda x, t, g, a, kw: (x.int(), t.int(), g.int(), a.int(), kw), "x must be float32"),
    (lambda x, t, g, a, kw: (x, t[:, :1], g, a, kw), r"target has shape \[3, 1, 4, 4\] but x has shape"),
    (lambda x, t, g, a, kw: (x[0, 0, 0, 0], t[0, 0, 0, 0], g[0, 0, 0, 0], a[0, 0, 0, 0], kw), "batch dimension"),
    (lambda x, t, g, a, kw: (x, t, g, x, kw), "adv and x .*memory location"),  # adv is x
    (lambda x, t, g, a, kw: (x, t, g, t, kw), "adv and target .*memory location"),
    (lambda x, t, g, a, kw: (x, t, g, a[:1].expand_as(a), kw), "single memory location"),  # expanded adv
    (lambda x, t, g, a, kw: (x, t, g, x.view(x.shape), kw), "adv and x .*memory location"),  # a view of x
    (lambda x, t, g, a, kw: (x[:, :1], t[:, :1], g[:, :1], x[:, 1:], kw), None),  # disjoint views: accepted
    (lambda x, t, g, a, kw: ([[0.5]], t, g, a, kw), TypeError),  # a list
]


@pytest.mark.parametrize("device,backend", BACKENDS)
@pytest.mark.parametrize("case", range(len(STEP_REJECTS)))
def test_orthogonal_step_rejects_the_same_arguments_on_every_backend(device, backend, case):
    change, message = STEP_REJECTS[case]
    x, t, g = _step_args(device)
    adv = torch.zeros_like(x)
    xb, tb, gb, ab, kw = change(x, t, g, adv, dict(STEP_KW))
    saved = [v.clone() if isinstance(v, torch.Tensor) else v for v in (xb, tb, gb, ab)]
    if message is None:  # legal: every backend gives the reference's result
        want_adv = ab.clone()
        want = reference.orthogonal_step(xb, tb, gb, want_adv, 0.05, 2e-3, 0.0, 1.0)
        out = ops.orthogonal_step(xb, tb, gb, ab, **kw, backend=backend)
        assert torch.equal(out, want) and torch.equal(ab, want_adv)
        return
    if message is TypeError:
        with pytest.raises(TypeError, match="x must be a tensor"):
            ops.orthogonal_step(xb, tb, gb, ab, **kw, backend=backend)
        return
    with pytest.raises(RuntimeError, match="lst_fast::orthogonal_step: .*" + message):
        ops.orthogonal_step(xb, tb, gb, ab, **kw, backend=backend)
    for before, after in zip(saved, (xb, tb, gb, ab), strict=True):  # nothing written before the error
        assert torch.equal(before, after)


ACCEPT_REJECTS = [  # (change to the argument list, message)
    (lambda a: {**a, "threshold": float("nan")}, "threshold must not be NaN"),
    (lambda a: {**a, "label": a["label"].int()}, "label must be int64, got Int"),
    (lambda a: {**a, "label": a["label"].float()}, "label must be int64, got Float"),
    (lambda a: {**a, "label": a["label"][:2]}, r"label must have shape \(3\)"),
    (lambda a: {**a, "logits": a["logits"][:2]}, r"logits must have shape \(3, num_classes\)"),
    (lambda a: {**a, "logits": a["logits"][:, :0]}, "at least one class"),
    (lambda a: {**a, "logits": a["logits"].long()}, "logits must be a floating tensor"),
    (lambda a: {**a, "p0": a["p0"].half(), "confidence": a["confidence"].half()}, "p0 must be float32 or float64"),
    (lambda a: {**a, "confidence": a["confidence"].float()}, "confidence must match p0"),
    (lambda a: {**a, "candidate": a["candidate"].double()}, "candidate has dtype Double but x has dtype Float"),
    (lambda a: {**a, "candidate_grad": a["candidate_grad"][:, :1]}, "candidate_grad has shape"),
    (lambda a: {**a, "grad": a["x"]}, "x and grad .*memory location"),
    (lambda a: {**a, "candidate": a["x"]}, "x and candidate .*memory location"),
    (lambda a: {**a, "candidate_grad": a["grad"].view(a["grad"].shape)}, "grad and candidate_grad .*memory location"),
    (lambda a: {**a, "x": a["x"][:1].expand_as(a["x"])}, "single memory location"),
    (lambda a: {**a, "confidence": a["p0"]}, "confidence and p0 are the same tensor"),
    (lambda a: {**a, "confidence": a["p0"].view(3)}, "confidence and p0 overlap"),  # a view of p0
    (lambda a: {**a, "confidence": a["confidence"][:1].expand(3)}, "confidence has internal overlap"),
    (lambda a: {**a, "logits": a["confidence"].view(3, 1)}, "confidence and logits overlap"),
]


def _accept_args(device):
    gen = torch.Generator().manual_seed(22)
    x, cand, grad, cand_grad = (torch.rand(3, 2, 4, 4, generator=gen).to(device) for _ in range(4))
    return dict(
        logits=torch.randn(3, 5, generator=gen).to(device),
        label=torch.tensor([0, 4, 2], device=device),
        p0=torch.rand(3, generator=gen, dtype=torch.float64).to(device),
        threshold=0.9,
        x=x,
        candidate=cand,
        grad=grad,
        candidate_grad=cand_grad,
        confidence=torch.rand(3, generator=gen, dtype=torch.float64).to(device),
    )


@pytest.mark.parametrize("device,backend", BACKENDS)
@pytest.mark.parametrize("case", range(len(ACCEPT_REJECTS)))
def test_confidence_accept_rejects_the_same_arguments_on_every_backend(device, backend, case):
    change, message = ACCEPT_REJECTS[case]
    args = change(_accept_args(device))
    saved = {k: v.clone() for k, v in args.items() if isinstance(v, torch.Tensor)}
    with pytest.raises(RuntimeError, match="lst_fast::confidence_accept: .*" + message):
        ops.confidence_accept(**args, backend=backend)
    for k, v in saved.items():
        assert torch.equal(v, args[k]), f"{k} was written before the error"


@pytest.mark.parametrize("device,backend", BACKENDS)
@pytest.mark.parametrize(
    "vertices,weights,message",
    [
        ((2, 3, 4), (5, 2), r"weights must have shape \(P, K\) with K = vertices.size\(1\) = 3"),
        ((2, 0, 4), (5, 0), r"at least one vertex"),
        ((2,), (5, 2), r"vertices must have shape \(N, K, ...\)"),
    ],
)
def test_simplex_points_rejects_the_same_shapes_on_every_backend(device, backend, vertices, weights, message):
    with pytest.raises(RuntimeError, match="lst_fast::simplex_points: .*" + message):
        ops.simplex_points(torch.rand(vertices, device=device), torch.rand(weights, device=device), backend=backend)


@pytest.mark.parametrize("device,backend", BACKENDS)
def test_simplex_points_rejects_the_same_dtypes_on_every_backend(device, backend):
    v, w = torch.rand(2, 3, 4, device=device), torch.rand(5, 3, device=device)
    with pytest.raises(RuntimeError, match="vertices must be float32, float64, float16 or bfloat16, got Long"):
        ops.simplex_points(v.long(), w, backend=backend)
    with pytest.raises(RuntimeError, match="weights must be float32 or float64, got Half"):
        ops.simplex_points(v, w.half(), backend=backend)


@pytest.mark.parametrize("device,backend", BACKENDS)
def test_out_of_range_label_is_never_accepted_on_every_backend(device, backend):
    """A label outside [0, K) gives a NaN probability: that sample is not accepted and keeps x, grad and
    its confidence (no out-of-bounds read, no host sync to check labels); the others are unaffected."""
    gen = torch.Generator().manual_seed(23)
    n, k = 5, 4
    logits = torch.zeros(n, k)  # p = 1/4 for every in-range label
    label = torch.tensor([0, 4, -1, 3, 1 << 40])
    p0 = torch.full((n,), 0.3, dtype=torch.float64)  # drop 0.05 < 0.2: accepted when in range
    x, cand, grad, cand_grad = (torch.rand(n, 3, 6, 6, generator=gen) for _ in range(4))
    conf = torch.full((n,), 0.9, dtype=torch.float64)
    xs, gs, cs = x.to(device), grad.to(device), conf.to(device)
    accepted = ops.confidence_accept(
        logits.to(device),
        label.to(device),
        p0.to(device),
        0.2,
        xs,
        cand.to(device),
        gs,
        cand_grad.to(device),
        cs,
        backend=backend,
    )
    want = torch.tensor([True, False, False, True, False])
    assert torch.equal(accepted.cpu(), want)
    m = want[:, None, None, None]
    assert torch.equal(xs.cpu(), torch.where(m, cand, x)) and torch.equal(gs.cpu(), torch.where(m, cand_grad, grad))
    assert torch.equal(cs.cpu(), torch.where(want, 0.25, conf))
