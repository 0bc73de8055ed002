"""Linear paths, triangles and distances against direct evaluation and scikit-image."""

from __future__ import annotations

import pytest
import torch

from lst_fast.geometry import (
    line_weights,
    linear_path_confidence,
    simplex_confidence,
    triangle_confidence,
    triangle_weights,
)
from lst_fast.metrics import distances, ssim
from conftest import tiny_cnn


def test_grids():
    w = triangle_weights(10)
    assert w.shape == (66, 3)
    torch.testing.assert_close(w.sum(1), torch.ones(66, dtype=torch.float64), rtol=0, atol=1e-15)
    assert (w >= 0).all() and len({tuple(r) for r in w.tolist()}) == 66
    assert torch.equal(line_weights(3), torch.tensor([[1.0, 0.0], [0.5, 0.5], [0.0, 1.0]], dtype=torch.float64))
    with pytest.raises(ValueError):
        triangle_weights(0)


def test_simplex_confidence_equals_direct_evaluation():
    model = tiny_cnn(scale=12).eval()
    g = torch.Generator().manual_seed(0)
    a, b, c = (torch.rand(4, 1, 8, 8, generator=g) for _ in range(3))
    label = torch.tensor([0, 1, 2, 3])
    tri = triangle_confidence(model, a, b, c, label, n=4, chunk_bytes=3000)  # several chunks
    w = triangle_weights(4).float()
    with torch.no_grad():
        for i in range(4):
            pts = w[:, 0, None, None, None] * a[i] + w[:, 1, None, None, None] * b[i] + w[:, 2, None, None, None] * c[i]
            p = torch.softmax(model(pts).double(), 1)[:, label[i]]
            torch.testing.assert_close(tri[i], p.float(), rtol=0, atol=1e-6)
    line = linear_path_confidence(model, a, b, label, steps=5)
    torch.testing.assert_close(line[:, 0], tri[:, 0])
    with pytest.raises(ValueError, match="weights must have shape"):
        simplex_confidence(model, torch.stack([a, b], 1), torch.rand(3, 3), label)


def test_ssim_matches_scikit_image():
    metrics = pytest.importorskip("skimage.metrics")
    g = torch.Generator().manual_seed(1)
    x = torch.rand(3, 1, 28, 28, generator=g, dtype=torch.float64)
    y = (x + 0.2 * torch.randn(x.shape, generator=g, dtype=torch.float64)).clamp(0, 1)
    ours = ssim(x, y)
    for i in range(3):
        ref = metrics.structural_similarity(
            x[i, 0].numpy(),
            y[i, 0].numpy(),
            gaussian_weights=True,
            sigma=1.5,
            use_sample_covariance=False,
            data_range=1.0,
        )
        assert float(ours[i]) == pytest.approx(ref, abs=1e-10)
    assert torch.allclose(ssim(x, x), torch.ones(3, dtype=torch.float64))
    # colour, not square (the blur runs along H and W apart), the channels averaged as scikit-image does
    x = torch.rand(2, 3, 33, 40, generator=g, dtype=torch.float64)
    y = (x + 0.3 * torch.randn(x.shape, generator=g, dtype=torch.float64)).clamp(0, 1)
    ours = ssim(x, y)
    for i in range(2):
        ref = metrics.structural_similarity(
            x[i].numpy(),
            y[i].numpy(),
            channel_axis=0,
            gaussian_weights=True,
            sigma=1.5,
            use_sample_covariance=False,
            data_range=1.0,
        )
        assert float(ours[i]) == pytest.approx(ref, abs=1e-10)


def test_ssim_matches_scikit_image_on_a_224_px_colour_batch():
    """As the evaluation calls it: float32 colour pairs at 224 px, several per call (one cache-sized chunk
    each), among them a black-and-white image, where float32 statistics would be 6e-5 off (E[x^2] - E[x]^2
    cancels in its flat regions)."""
    metrics = pytest.importorskip("skimage.metrics")
    g = torch.Generator().manual_seed(2)
    x = torch.rand(2, 3, 224, 224, generator=g)
    x[0] = 0.0
    x[0, :, :, 100:] = 1.0
    y = (x + 0.1 * torch.randn(x.shape, generator=g)).clamp(0, 1)
    y[0] = x[0]
    y[0, :, 50:60] = 0.5  # one stripe differs; the rest of the black-and-white pair is flat and equal
    ours = ssim(x, y)
    assert ours.dtype == torch.float64 and ours.shape == (2,)
    for i in range(2):
        ref = metrics.structural_similarity(
            x[i].double().numpy(),
            y[i].double().numpy(),
            channel_axis=0,
            gaussian_weights=True,
            sigma=1.5,
            use_sample_covariance=False,
            data_range=1.0,
        )
        assert float(ours[i]) == pytest.approx(ref, abs=1e-10), i
    assert torch.equal(ssim(x[1:2], y[1:2]), ours[1:2])  # alone or in a batch: the same number


def test_distances():
    x = torch.zeros(2, 1, 16, 16)
    y = torch.full((2, 1, 16, 16), 0.5)
    d = distances(x, y)
    torch.testing.assert_close(d["l2"], torch.full((2,), 8.0, dtype=torch.float64))
    torch.testing.assert_close(d["rms"], torch.full((2,), 0.5, dtype=torch.float64))
    torch.testing.assert_close(d["linf"], torch.full((2,), 0.5, dtype=torch.float64))


def test_triangle_statistics_by_hand():
    from lst_fast.geometry import per_source, triangle_statistics

    w = triangle_weights(2)  # rows: (1,0,0) (.5,0,.5) (0,0,1) (.5,.5,0) (0,.5,.5) (0,1,0)
    assert w[0].tolist() == [1.0, 0.0, 0.0]
    conf = torch.tensor([[0.9, 0.79, 0.95, 0.55, 0.5, 0.75]], dtype=torch.float64)  # no value on a boundary
    s = triangle_statistics(conf, w)
    assert float(s["p_source"]) == pytest.approx(0.9)
    assert float(s["mean"]) == pytest.approx(sum([0.9, 0.79, 0.95, 0.55, 0.5, 0.75]) / 6)
    assert float(s["frac_above_0"]) == pytest.approx(1 / 6)  # 0.95 > 0.9
    assert float(s["frac_above_0.1"]) == pytest.approx(2 / 6)  # 0.9, 0.95 > 0.8
    assert float(s["frac_above_0.2"]) == pytest.approx(4 / 6)  # and 0.79, 0.75 > 0.7
    assert float(s["frac_above_0.3"]) == pytest.approx(4 / 6)  # 0.55 and 0.5 are not > 0.6
    # edges from the source: rows 0, 1, 2 (a = 0) and 0, 3, 5 (b = 0); row 4 is the far edge
    assert float(s["edge_mean"]) == pytest.approx((0.9 + 0.79 + 0.95 + 0.55 + 0.75) / 5)
    assert float(s["edge_min_drop"]) == pytest.approx(0.55 - 0.9)
    two = triangle_statistics(torch.cat([conf, torch.full((2, 6), 0.5, dtype=torch.float64)]), w)
    avg = per_source(two, torch.tensor([0, 0, 1]), 2)
    assert float(avg["mean"][0]) == pytest.approx((float(s["mean"]) + 0.5) / 2)
    assert float(avg["edge_min_drop"][0]) == pytest.approx(-0.35) and float(avg["edge_min_drop"][1]) == 0.0


def test_width_profile_is_flat_across_a_direction_the_model_ignores():
    from lst_fast.geometry import width_profile

    class AlongU(torch.nn.Module):  # logits depend on <u, x> only
        def __init__(self, u):
            super().__init__()
            self.register_buffer("u", u.flatten())

        def forward(self, x):
            s = x.flatten(1).double() @ self.u.double()
            return torch.stack([4 * s, torch.zeros_like(s)], 1).float()

    g = torch.Generator().manual_seed(0)
    u = torch.randn(1, 3, 5, 5, generator=g)
    x = torch.rand(2, 3, 5, 5, generator=g)
    model = AlongU(u)
    label = torch.zeros(2, dtype=torch.long)
    out = width_profile(model, x, u.expand_as(x), label, radii=[0.0, 0.5, 2.0], k=16, generator=g)
    with torch.no_grad():
        p = torch.softmax(model(x).double(), 1)[:, 0].float()
    for r in range(3):
        torch.testing.assert_close(out["low"][:, r], p, rtol=0, atol=1e-4)
        torch.testing.assert_close(out["high"][:, r], p, rtol=0, atol=1e-4)
    generic = width_profile(
        tiny_cnn(scale=12),
        torch.rand(2, 1, 8, 8, generator=g),
        torch.randn(2, 1, 8, 8, generator=g),
        label,
        radii=[0.0, 3.0],
        k=32,
        generator=g,
    )
    assert (generic["low"] <= generic["high"]).all()
    torch.testing.assert_close(generic["low"][:, 0], generic["high"][:, 0])  # radius 0: one point
    assert (generic["high"][:, 1] - generic["low"][:, 1] > 0).all()


def _width_profile_as_written_first(model, x, direction, label, radii, k, seed, step):
    """width_profile's first implementation (fresh tensors per radius), the reference for its reuse of
    buffers: chunks of `step` samples, directions drawn in float32 from one CPU generator seeded `seed`
    (float32 since 2026-12-08: the float64 draw cost more than the rest), projected in float64."""
    from lst_fast.backends.confidence import class_probability

    n, d = x.shape[0], x[0].numel()
    generator = torch.Generator().manual_seed(seed)
    u = direction.reshape(n, 1, d).to(torch.float64)
    u = u / u.norm(dim=2, keepdim=True).clamp_min(1e-300)
    q = torch.tensor((0.05, 0.95), dtype=torch.float64)
    chunks = []
    with torch.no_grad():
        for start in range(0, n, step):
            m = min(step, n - start)
            dirs = torch.randn(m, k, d, generator=generator, dtype=torch.float32).double()  # drawn in float32
            dirs = dirs - (dirs * u[start : start + m]).sum(2, keepdim=True) * u[start : start + m]
            dirs = torch.div(dirs, dirs.norm(dim=2, keepdim=True))
            base = x[start : start + m].reshape(m, 1, d).to(torch.float64)
            rows = []
            for r in radii:
                points = (base + r * dirs).to(x.dtype).reshape(m * k, *x.shape[1:])
                p = class_probability(model(points), label[start : start + m].repeat_interleave(k)).view(m, k)
                rows.append(torch.quantile(p, q, dim=1))
            chunks.append(torch.stack(rows, 2))
    return torch.cat(chunks, 1).float()


def test_width_profile_with_reused_buffers_is_bit_for_bit_its_first_implementation():
    from lst_fast.geometry import width_profile

    model = tiny_cnn(channels=3, scale=12).eval()
    g = torch.Generator().manual_seed(4)
    x, step = torch.rand(5, 3, 8, 8, generator=g), torch.randn(5, 3, 8, 8, generator=g)
    label = torch.randint(0, 5, (5,), generator=g)
    radii, k = [0.0, 0.5, 2.0, 8.0], 16
    chunk_bytes = 2 * k * x[0].numel() * 4  # two samples a chunk: chunks of 2, 2 and 1
    out = width_profile(
        model, x, step, label, radii, k=k, generator=torch.Generator().manual_seed(9), chunk_bytes=chunk_bytes
    )
    expected = _width_profile_as_written_first(model, x, step, label, radii, k, seed=9, step=2)
    assert torch.equal(out["low"], expected[0]) and torch.equal(out["high"], expected[1])


def test_lpips_says_what_is_missing():
    from lst_fast.metrics import lpips_distance

    try:
        import lpips  # noqa: F401
    except ImportError:
        with pytest.raises(RuntimeError, match="needs the `lpips` package"):
            lpips_distance(torch.rand(1, 1, 16, 16), torch.rand(1, 1, 16, 16))
    else:
        pytest.skip("lpips is installed; its weights may need a network")


def test_width_along_a_recorded_path():
    import lst_fast
    from lst_fast.geometry import width_along_path

    model = tiny_cnn(scale=12)
    g = torch.Generator().manual_seed(2)
    x, y = torch.rand(3, 1, 8, 8, generator=g), torch.rand(3, 1, 8, 8, generator=g)
    result = lst_fast.traverse(model, x, y, iterations=6, record_every=2, step_size=0.05)
    out = width_along_path(model, result, [0.0, 1.0], k=8, generator=g)
    assert out["low"].shape == (3, 3, 2) and out["iterations"].tolist() == [0, 2, 4]
    assert (out["low"] <= out["high"]).all()
    with pytest.raises(ValueError, match="record_every > 0"):
        width_along_path(model, lst_fast.traverse(model, x, y, iterations=2), [1.0])


def test_bf16_geometry_is_close_to_fp32_and_validates_precision():
    torch.manual_seed(5)
    model = torch.nn.Sequential(
        torch.nn.Conv2d(1, 4, 3, padding=1),
        torch.nn.BatchNorm2d(4),
        torch.nn.ReLU(),
        torch.nn.Flatten(),
        torch.nn.Linear(4 * 36, 3),
    ).eval()
    a, b, c = (torch.rand(5, 1, 6, 6) for _ in range(3))
    label = torch.randint(0, 3, (5,))
    exact = triangle_confidence(model, a, b, c, label, n=4)
    fast = triangle_confidence(model, a, b, c, label, n=4, precision="bf16")
    assert fast.shape == exact.shape and fast.dtype == torch.float32
    assert float((fast - exact).abs().max()) < 0.02
    with pytest.raises(ValueError, match="precision must be one of"):
        triangle_confidence(model, a, b, c, label, n=4, precision="int8")


def _bad_geometry_calls():
    import torch

    from lst_fast import geometry as g
    from lst_fast import metrics as m

    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 3))
    x = torch.rand(2, 1, 4, 4)
    lab = torch.tensor([0, 1])
    pair = torch.stack([x, x], 1)
    return {
        "steps": lambda: g.line_weights(2.5),
        "n": lambda: g.triangle_weights("3"),
        r"label must hold class indices in \[0, 3\), got values in \[0, 7\]": lambda: g.simplex_confidence(
            model, pair, g.line_weights(3), torch.tensor([0, 7])
        ),
        r"label must hold class indices in \[0, 3\), got values in \[-1, 0\]": lambda: g.simplex_confidence(
            model, pair, g.line_weights(3), torch.tensor([0, -1])
        ),
        "vertices": lambda: g.simplex_confidence(model, [x], g.line_weights(3), lab),
        "weights": lambda: g.simplex_confidence(model, pair, torch.ones(3, 2, dtype=torch.long), lab),
        "weights must have shape": lambda: g.simplex_confidence(model, pair, torch.ones(0, 2), lab),
        "chunk_bytes": lambda: g.simplex_confidence(model, pair, g.line_weights(3), lab, chunk_bytes=0),
        "model": lambda: g.simplex_confidence("cnn", pair, g.line_weights(3), lab),
        "source, end": lambda: g.linear_path_confidence(model, x, x[:1], lab),
        "end2": lambda: g.triangle_confidence(model, x, x, torch.rand(2, 1, 4, 5), lab),
        "confidence": lambda: g.triangle_statistics([[1.0]], g.triangle_weights(1)),
        "stats": lambda: g.per_source({}, torch.tensor([0]), 1),
        "source_index must lie": lambda: g.per_source({"mean": torch.rand(3)}, torch.tensor([0, 1, 5]), 2),
        "stats\\['mean'\\] has 3": lambda: g.per_source({"mean": torch.rand(3)}, torch.tensor([0, 1]), 2),
        "label must have shape \\(2,\\)": lambda: g.width_profile(model, x, x, lab[:1], [1.0], k=4),
        "radii": lambda: g.width_profile(model, x, x, lab, [], k=4),
        "radii must": lambda: g.width_profile(model, x, x, lab, [float("nan")], k=4),
        "quantiles": lambda: g.width_profile(model, x, x, lab, [1.0], k=4, quantiles=(0.5, 2.0)),
        "k must": lambda: g.width_profile(model, x, x, lab, [1.0], k=4.5),
        r"label must hold class indices in \[0, 3\), got values in \[0, 9\]": lambda: g.width_profile(
            model, x, x, torch.tensor([0, 9]), [1.0], k=4
        ),
        "result": lambda: g.width_along_path(model, None, [1.0]),
        "distances needs x and target of one shape": lambda: m.distances(x, x[:1]),
        "distances needs x": lambda: m.distances(x[0], x[0]),
        "ssim needs floating-point": lambda: m.ssim(
            torch.ones(1, 1, 11, 11, dtype=torch.long), torch.ones(1, 1, 11, 11, dtype=torch.long)
        ),
    }


@pytest.mark.parametrize("name", list(_bad_geometry_calls()))
def test_geometry_and_metrics_name_the_bad_argument(name):
    """Bad arguments get a ValueError or TypeError naming the argument, never torch's own error from deep
    inside (index out of bounds, stack of an empty list, a bare StopIteration)."""
    with pytest.raises((ValueError, TypeError), match=name):
        _bad_geometry_calls()[name]()


def test_width_profile_of_no_image_is_empty():
    import torch

    from lst_fast.geometry import width_profile

    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 3))
    x = torch.rand(0, 1, 4, 4)
    out = width_profile(model, x, x, torch.zeros(0, dtype=torch.long), [0.0, 1.0], k=4)
    assert out["low"].shape == (0, 2) and out["high"].shape == (0, 2) and out["radii"].tolist() == [0.0, 1.0]
