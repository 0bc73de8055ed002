"""Native operators against the pure-PyTorch reference, opcheck, and their error messages."""
from __future__ import annotations

import itertools

import pytest
import torch
from hypothesis import given, settings, strategies as st

from lst_fast import ops, reference
from lst_fast._extension import has_native_kernel
from conftest import DEVICES

DTYPES = [torch.float32, torch.float64, torch.float16, torch.bfloat16]
# One or two rounding steps of each dtype (products are rounded on their own in both implementations;
# only the order of the per-sample double sums differs).
TOL = {torch.float32: 2e-6, torch.float64: 1e-12, torch.float16: 2e-3, torch.bfloat16: 1.6e-2}
SHAPES = [(1, 1, 1, 1), (2, 3, 5, 7), (5, 1, 28, 28), (3, 3, 32, 32), (2, 3, 100, 100), (4, 17), (0, 3, 4, 4)]
LAYOUTS = ["contiguous", "channels_last", "strided"]


def native_or_skip(name, device):
    if not has_native_kernel(name, torch.device(device).type):
        pytest.skip(f"no compiled {name} kernel for {device}")


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
    gen = torch.Generator().manual_seed(seed)
    x = make(shape, dtype, device, layout, gen)
    target = make(shape, dtype, device, layout, gen)
    grad = make(shape, dtype, device, layout, gen, -1e-2, 1e-2)
    adv = make(shape, dtype, device, layout, gen, -2e-3, 2e-3)
    if shape[0] > 1:  # edge cases inside a batch: a zero gradient, values at the bounds, v = 0
        grad[0].zero_()
        x[1][..., ::2] = 0.0
        x[1][..., 1::3] = 1.0
        target[-1].copy_(x[-1])
    return x, target, grad, adv


STEP_KW = dict(step_size=0.05, adv_step_size=2e-3, bounds=(0.0, 1.0))


def run_step(backend, x, target, grad, adv, **kw):
    adv = adv.clone()
    out = ops.orthogonal_step(x, target, grad, adv, **{**STEP_KW, **kw}, backend=backend)
    return out, adv


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
    torch.testing.assert_close(out, ref, rtol=TOL[dtype], atol=TOL[dtype])
    torch.testing.assert_close(adv_out, adv_ref, rtol=TOL[dtype], atol=TOL[dtype])
    if out.numel():
        assert out.min() >= 0 and out.max() <= 1


@pytest.mark.parametrize("device", DEVICES)
def test_orthogonal_step_float32_is_bit_exact_on_typical_data(device):
    native_or_skip("orthogonal_step", device)
    x, target, grad, adv = step_inputs((8, 3, 16, 16), torch.float32, device, "contiguous", seed=3)
    out, adv_out = run_step("native", x, target, grad, adv)
    ref, adv_ref = run_step("reference", x, target, grad, adv)
    assert torch.equal(adv_out, adv_ref)
    mismatch = (out != ref).float().mean().item()
    assert mismatch < 1e-3  # only a last-bit difference of a rare coefficient may differ


@pytest.mark.parametrize("device", DEVICES)
def test_orthogonal_step_zero_gradient_moves_along_target(device):
    native_or_skip("orthogonal_step", device)
    x = torch.full((2, 1, 3, 3), 0.25, device=device)
    target = torch.full_like(x, 0.75)
    out = ops.orthogonal_step(x, target, torch.zeros_like(x), torch.zeros_like(x), step_size=0.5,
                              adv_step_size=1e-3, bounds=(0.0, 1.0))
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out, torch.full_like(x, 0.5))


@pytest.mark.parametrize("device", DEVICES)
def test_orthogonal_step_projection_is_orthogonal_to_gradient(device):
    native_or_skip("orthogonal_step", device)
    gen = torch.Generator().manual_seed(1)
    x = (torch.rand(4, 3, 8, 8, generator=gen, dtype=torch.float64) * 0.5 + 0.25).to(device)
    target = (torch.rand(4, 3, 8, 8, generator=gen, dtype=torch.float64) * 0.5 + 0.25).to(device)
    grad = torch.randn(4, 3, 8, 8, generator=gen, dtype=torch.float64).to(device)
    out = ops.orthogonal_step(x, target, grad, torch.zeros_like(x), step_size=0.01, adv_step_size=0.0,
                              bounds=(0.0, 1.0))
    inner = ((out - x) * grad).flatten(1).sum(1)
    assert inner.abs().max() < 1e-12


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


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n,shape", [(1, (1, 1, 1)), (9, (3, 5, 7)), (6, (1, 28, 28)), (3, (3, 64, 64)), (0, (2, 2, 2))])
@pytest.mark.parametrize("layout", LAYOUTS)
def test_confidence_accept_matches_reference(device, dtype, n, shape, layout):
    native_or_skip("confidence_accept", device)
    inputs = accept_inputs(n, shape, dtype, device, layout)
    got = run_accept("native", *inputs)
    want = run_accept("reference", *inputs)
    assert got[0].dtype == torch.bool and got[0].shape == (n,)
    assert torch.equal(got[0], want[0])
    assert torch.equal(got[1], want[1]) and torch.equal(got[2], want[2])
    torch.testing.assert_close(got[3], want[3], rtol=1e-12, atol=1e-15)
    if n > 2:
        assert not got[0][2]
    if n > 3:
        assert got[0].any() and not got[0].all(), "the sample needs both outcomes"


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("conf_dtype,logit_dtype", [(torch.float32, torch.float32), (torch.float32, torch.bfloat16),
                                                     (torch.float64, torch.float64), (torch.float64, torch.float16)])
def test_confidence_accept_dtype_combinations(device, conf_dtype, logit_dtype):
    native_or_skip("confidence_accept", device)
    inputs = accept_inputs(16, (2, 4, 4), torch.float32, device, "contiguous", seed=5, conf_dtype=conf_dtype,
                           logit_dtype=logit_dtype)
    got, want = run_accept("native", *inputs), run_accept("reference", *inputs)
    assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])
    torch.testing.assert_close(got[3], want[3])


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
    for dtype, layout in itertools.product([torch.float32, torch.bfloat16, torch.float64], ["contiguous", "channels_last"]):
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
def test_opcheck(device):
    for name in ("orthogonal_step", "confidence_accept", "simplex_points"):
        native_or_skip(name, device)
    for name, args in opcheck_samples(device):
        torch.library.opcheck(getattr(torch.ops.lst_fast, name).default, args)


@pytest.mark.parametrize("device", DEVICES)
def test_ops_under_torch_compile(device):
    native_or_skip("orthogonal_step", device)

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
    for a, b in zip(compiled_args, eager_args):  # the in-place updates happen under compile too
        torch.testing.assert_close(a, b, rtol=0, atol=0, equal_nan=True)


# -- property tests ------------------------------------------------------------------------------------

@settings(max_examples=40, deadline=None)
@given(
    n=st.integers(0, 4),
    rest=st.lists(st.integers(1, 9), min_size=1, max_size=3),
    dtype=st.sampled_from(DTYPES),
    step_size=st.floats(1e-4, 1.0),
    adv_step_size=st.sampled_from([0.0, 1e-3, 0.05]),
    scale=st.sampled_from([0.0, 1e-40, 1e-30, 1e-3, 1.0, 1e3]),  # 1e-40: float32 subnormal gradients
    at_bounds=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_orthogonal_step_property(n, rest, dtype, step_size, adv_step_size, scale, at_bounds, seed):
    native_or_skip("orthogonal_step", "cpu")
    gen = torch.Generator().manual_seed(seed)
    shape = (n, *rest)
    x = torch.rand(shape, generator=gen)
    x = (x.round() if at_bounds else x).to(dtype)  # every value exactly at lo or hi
    target = torch.rand(shape, generator=gen).to(dtype)
    grad = (torch.randn(shape, generator=gen, dtype=torch.float64) * scale).to(dtype)
    adv = ((torch.rand(shape, generator=gen) * 2 - 1) * adv_step_size).to(dtype)
    kw = dict(step_size=step_size, adv_step_size=adv_step_size, bounds=(0.0, 1.0))
    out, adv_out = run_step("native", x, target, grad, adv, **kw)
    ref, adv_ref = run_step("reference", x, target, grad, adv, **kw)
    torch.testing.assert_close(out, ref, rtol=TOL[dtype], atol=TOL[dtype], equal_nan=True)
    torch.testing.assert_close(adv_out, adv_ref, rtol=TOL[dtype], atol=TOL[dtype])
    assert not out.isnan().any()


@settings(max_examples=30, deadline=None)
@given(n=st.integers(1, 6), k=st.integers(1, 4), p=st.integers(1, 5), d=st.integers(1, 300),
       dtype=st.sampled_from(DTYPES), seed=st.integers(0, 2**16))
def test_simplex_points_property(n, k, p, d, dtype, seed):
    native_or_skip("simplex_points", "cpu")
    gen = torch.Generator().manual_seed(seed)
    vertices = torch.rand(n, k, d, generator=gen).to(dtype)
    weights = torch.rand(p, k, generator=gen, dtype=torch.float64)
    torch.testing.assert_close(ops.simplex_points(vertices, weights),
                               ops.simplex_points(vertices, weights, backend="reference"), rtol=0, atol=0)


@settings(max_examples=30, deadline=None)
@given(n=st.integers(1, 8), k=st.integers(1, 12), threshold=st.floats(0.0, 1.0), spread=st.floats(0.0, 40.0),
       seed=st.integers(0, 2**16))
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
    near = ((p0 - p) - threshold).abs() < 1e-12  # decisions this close may differ by rounding only
    assert torch.equal(got[0][~near], want[0][~near])
    torch.testing.assert_close(got[3][~near], want[3][~near])


# -- errors -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("device", DEVICES)
def test_native_ops_reject_bad_arguments(device):
    native_or_skip("orthogonal_step", device)
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
    logits, label, p0 = torch.rand(2, 3, device=device), torch.zeros(2, dtype=torch.long, device=device), torch.rand(2, device=device)
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
    if device.type == "cpu" if isinstance(device, torch.device) else device == "cpu":
        with pytest.raises(RuntimeError, match=r"label\[1\] = 5 is outside"):
            accept(logits, torch.tensor([0, 5], device=device), p0, 0.2, *args)
