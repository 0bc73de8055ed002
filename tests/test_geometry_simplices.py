"""k-simplices sampled with Dirichlet(1, ..., 1) weights: the weights are uniform over the simplex and
seeded, the triangle (k = 2) agrees with a dense area-uniform grid, and for a logistic regression, whose
high-confidence region is a half-space, the estimate's interval covers the exact volume fraction. The
interval (Clopper-Pearson) is scipy's to 1e-10 and holds its level where the true share is near 0 or 1."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from lst_fast.errors import InputError, InputTypeError
from lst_fast.geometry import (
    TRIANGLE_DROPS,
    dirichlet_weights,
    fraction_interval,
    simplex_confidence,
    simplex_statistics,
)
from conftest import tiny_cnn


def _centroid_grid(n: int) -> torch.Tensor:
    """(n * n, 3) barycentric centroids of the n * n congruent small triangles of the triangle split n
    times along each edge: an area-uniform grid (every point stands for the same area)."""
    rows = []
    for i, j in itertools.product(range(n), range(n)):
        if i + j <= n - 1:  # the upward triangle (i, j), (i+1, j), (i, j+1)
            rows.append((3 * i + 1, 3 * j + 1))
        if i + j <= n - 2:  # the downward one (i+1, j), (i, j+1), (i+1, j+1)
            rows.append((3 * i + 2, 3 * j + 2))
    a = torch.tensor(rows, dtype=torch.float64) / (3 * n)
    return torch.stack([1 - a.sum(1), a[:, 0], a[:, 1]], 1)


def _statistics(model, vertices, weights, label):
    """simplex_statistics of one simplex per source: p at the source vertex, then the Dirichlet points."""
    p_source = simplex_confidence(model, vertices[:, :1], torch.ones(1, 1, dtype=weights.dtype), label)[:, 0]
    confidence = simplex_confidence(model, vertices, weights, label)
    return simplex_statistics(confidence[:, None], p_source), p_source, confidence


def test_dirichlet_weights_are_seeded_and_uniform_over_the_simplex():
    w = dirichlet_weights(20000, 4, seed=3)
    assert w.shape == (20000, 4) and w.dtype == torch.float64 and (w >= 0).all()
    torch.testing.assert_close(w.sum(1), torch.ones(20000, dtype=torch.float64), rtol=0, atol=1e-12)
    assert torch.equal(w, dirichlet_weights(20000, 4, seed=3))  # the same for every source and model
    assert not torch.equal(w, dirichlet_weights(20000, 4, seed=4))

    # A coordinate of Dirichlet(1, 1, 1, 1) is Beta(1, 3): P(w_0 > t) = (1 - t)^3. Kolmogorov-Smirnov distance
    # of the 20000 draws, against 1.95 / sqrt(n) (the 0.1% critical value): a normalized uniform (the
    # common mistake) is far off.
    def ks(column):
        t = column.sort().values
        cdf = 1 - (1 - t) ** 3
        empirical = torch.arange(1, len(t) + 1, dtype=torch.float64) / len(t)
        return float((cdf - empirical).abs().max())

    assert all(ks(w[:, i]) < 1.95 / math.sqrt(len(w)) for i in range(4))
    u = torch.rand(20000, 4, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    assert ks((u / u.sum(1, keepdim=True))[:, 0]) > 1.95 / math.sqrt(len(w))
    with pytest.raises(ValueError, match="points must be an integer >= 1"):
        dirichlet_weights(0, 3, seed=0)
    with pytest.raises(ValueError, match="seed must be an integer >= 0"):
        dirichlet_weights(5, 3, seed=-1)


def test_simplex_statistics_by_hand():
    # one source, two simplices, three points: per point the simplices' mean, then over the points
    conf = torch.tensor([[[0.9, 0.5, 0.7], [0.7, 0.9, 0.1]]])
    stats = simplex_statistics(conf, torch.tensor([0.8]), drops=(0.0, 0.2))
    per_point_frac = torch.tensor([0.5, 0.5, 0.0])  # > 0.8: (1, 0), (0, 1), (0, 0)
    assert stats["frac_above_0"].item() == pytest.approx(1 / 3)
    assert stats["se_frac_above_0"].item() == pytest.approx(float(per_point_frac.std()) / math.sqrt(3))
    assert stats["frac_above_0.2"].item() == pytest.approx(4 / 6)  # > 0.6: 0.9, 0.7 and 0.7, 0.9
    assert stats["mean"].item() == pytest.approx(3.8 / 6)
    with pytest.raises(ValueError, match="P >= 2"):
        simplex_statistics(conf[:, :, :1], torch.tensor([0.8]))


def test_triangle_estimate_agrees_with_a_dense_area_uniform_grid():
    """k = 2: the Dirichlet estimate (4000 points) against the area-uniform grid of 6400 centroids, on three
    triangles of a nonlinear model, for every d of Table 2: within four standard errors, and the cases
    are not all trivial (fractions strictly between 0 and 1)."""
    model = tiny_cnn(scale=12).eval().double()
    g = torch.Generator().manual_seed(5)
    source = torch.rand(3, 1, 1, 8, 8, generator=g, dtype=torch.float64)
    # the other vertices far from the source in random directions, so the confidence varies over the triangle
    vertices = torch.cat([source, source + 4 * torch.randn(3, 2, 1, 8, 8, generator=g, dtype=torch.float64)], 1)
    with torch.no_grad():
        label = model(vertices[:, 0]).argmax(1)
    stats, p_source, _ = _statistics(model, vertices, dirichlet_weights(4000, 3, seed=0), label)
    dense = simplex_confidence(model, vertices, _centroid_grid(80), label).double()
    interior = 0
    for d in TRIANGLE_DROPS:
        grid = (dense > (p_source.double() - d)[:, None]).double().mean(1)
        estimate, se = stats[f"frac_above_{d:g}"], stats[f"se_frac_above_{d:g}"]
        assert ((estimate - grid).abs() <= 4 * se + 1e-3).all(), (d, estimate, grid, se)
        interior += int(((grid > 0.02) & (grid < 0.98)).sum())
    assert interior >= 4
    torch.testing.assert_close(stats["mean"], dense.mean(1), rtol=0, atol=float(4 * stats["se_mean"].max()) + 1e-3)


def _half_space_fraction(a: torch.Tensor, c: float) -> float:
    """The exact fraction of the simplex with sum_i w_i a_i > c for w uniform over it (distinct a_i): one
    minus the divided-difference formula P(sum w_i a_i <= c) = sum_i (c - a_i)_+^k / prod_{j != i} (a_j - a_i)."""
    k = len(a) - 1
    below = 0.0
    for i in range(len(a)):
        others = torch.cat([a[:i], a[i + 1 :]])
        below += max(c - float(a[i]), 0.0) ** k / float(torch.prod(others - a[i]))
    return 1.0 - below


def _logistic_regression(dim: int, generator: torch.Generator) -> torch.nn.Module:
    """Two classes, logits (w.x + b, 0): p(class 0) = sigmoid(w.x + b), above a level on a half-space."""
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(dim, 2)).double().eval()
    with torch.no_grad():
        model[1].weight.zero_()
        model[1].weight[0] = torch.randn(dim, generator=generator, dtype=torch.float64) * 0.5
        model[1].bias.zero_()
    return model


def test_the_half_space_formula_matches_a_large_reference_sample():
    a = torch.tensor([1.0, -0.7, 2.1, 0.2, -1.5], dtype=torch.float64)
    w = dirichlet_weights(1_000_000, 5, seed=11)
    for c in (-0.5, 0.3, 1.2):
        assert _half_space_fraction(a, c) == pytest.approx(float((w @ a > c).double().mean()), abs=2e-3)


def test_logistic_regression_known_answer_is_covered_by_the_interval():
    """For k = 2..5 and every d, on four sources: the estimate's interval (fraction_interval, from 3000
    Dirichlet points) covers the exact fraction of the simplex above p_src - d. Every one of the 64 cases
    at level 99.99%, and at least 56 of them at 95% (expected about 61)."""
    g = torch.Generator().manual_seed(2)
    dim = 64
    model = _logistic_regression(dim, g)
    w_vec, bias = model[1].weight[0].detach(), 0.0
    images = torch.rand(4, 6, 1, 8, 8, generator=g, dtype=torch.float64)
    # the bias puts each source at a = 1 (p_src = 0.73), so thresholds p_src - d cut the simplices
    a_all = images.flatten(2) @ w_vec
    label = torch.zeros(4, dtype=torch.long)
    estimates, exacts = [], []
    for source in range(4):
        shift = 1.0 - float(a_all[source, 0])
        with torch.no_grad():
            model[1].bias[0] = bias + shift
        a = a_all[source] + shift
        for k in range(2, 6):
            vertices = images[source : source + 1, : k + 1]
            stats, p_source, _ = _statistics(model, vertices, dirichlet_weights(3000, k + 1, seed=k), label[:1])
            assert float(p_source) == pytest.approx(1 / (1 + math.exp(-1.0)), abs=1e-6)
            for d in TRIANGLE_DROPS:
                level = float(p_source) - d
                exacts.append(_half_space_fraction(a[: k + 1], math.log(level / (1 - level))))
                estimates.append(stats[f"frac_above_{d:g}"])
    estimate, exact = torch.cat(estimates), torch.tensor(exacts, dtype=torch.float64)
    low, high = fraction_interval(estimate, 3000, level=0.9999)  # one call: the quantiles are vectorized
    assert bool(((low - 1e-9 <= exact) & (exact <= high + 1e-9)).all()), (estimate, exact)
    low, high = fraction_interval(estimate, 3000)
    covered95 = int(((low - 1e-9 <= exact) & (exact <= high + 1e-9)).sum())
    cases, nontrivial = len(exacts), sum(0.02 < e < 0.98 for e in exacts)
    assert cases == 64 and covered95 >= 56 and nontrivial >= 16, (covered95, nontrivial)


def test_fraction_interval_is_clopper_pearson():
    """scipy's Beta quantiles: [B(a/2; x, P-x+1), B(1-a/2; x+1, P-x)], 0 and 1 at the ends, for P from 1 to
    5000; a fraction of a point (several simplices averaged) rounds outward; NaN stays NaN; shape kept."""
    beta = pytest.importorskip("scipy.stats").beta
    for points in (1, 2, 7, 500, 5000):
        counts = torch.tensor(sorted({0, 1, 2, points // 3, points // 2, points - 2, points - 1, points}))
        counts = counts[(counts >= 0) & (counts <= points)].to(torch.float64)
        for level in (0.95, 0.9999):
            low, high = fraction_interval(counts / points, points, level=level)
            tail = (1 - level) / 2
            for x, lo, hi in zip(counts.tolist(), low.tolist(), high.tolist(), strict=True):
                expected_low = 0.0 if x == 0 else beta.ppf(tail, x, points - x + 1)
                expected_high = 1.0 if x == points else beta.ppf(1 - tail, x + 1, points - x)
                assert lo == pytest.approx(expected_low, rel=1e-10, abs=1e-300), (points, level, x)
                assert hi == pytest.approx(expected_high, rel=1e-10), (points, level, x)
    low, high = fraction_interval(torch.tensor([[2.5 / 10, float("nan")]], dtype=torch.float32), 10)
    assert low.shape == high.shape == (1, 2) and low.dtype == torch.float64
    assert float(low[0, 0]) == pytest.approx(beta.ppf(0.025, 2, 9)) and float(high[0, 0]) == pytest.approx(
        beta.ppf(0.975, 4, 7)
    )
    assert bool(low[0, 1].isnan()) and bool(high[0, 1].isnan())


@pytest.mark.parametrize(
    "call, error, message",
    [
        (lambda: fraction_interval([0.5], 10), InputTypeError, "estimate must be a tensor"),
        (lambda: fraction_interval(torch.tensor([1.5]), 10), InputError, "estimate must hold fractions in"),
        (lambda: fraction_interval(torch.tensor([0.5]), 0), InputError, "points must be an integer >= 1"),
        (lambda: fraction_interval(torch.tensor([0.5]), 10, level=1.0), InputError, "level must be a number in"),
    ],
)
def test_fraction_interval_names_the_bad_argument(call, error, message):
    with pytest.raises(error, match=message):
        call()


def _normal_interval(estimate, se, points, z=1.959963984540054):
    """The interval fraction_interval replaced: estimate -+ z se, Clopper-Pearson only at exactly 0 or 1."""
    bound = 1 - 0.025 ** (1 / points)
    low = torch.where(estimate >= 1, torch.full_like(estimate, 1 - bound), (estimate - z * se).clamp(0, 1))
    high = torch.where(estimate <= 0, torch.full_like(estimate, bound), (estimate + z * se).clamp(0, 1))
    return low, high


def test_fraction_interval_holds_its_level_near_0_and_1():
    """An exact answer: confidences uniform on [0, 1) are above p_source with probability exactly
    1 - p_source, so the true share is known. 400 sources at each of 12 shares within 0.02 of 0 or 1 (3 to
    10 expected points of 500 on the far side) and at 9 shares in between: 95% intervals cover the truth at
    least 94% of the time in both regions (Clopper-Pearson: about 97.5% near the ends). The normal interval
    it replaced covers about 90% near the ends on the same draws, so this fails for it."""
    points, repeats = 500, 400
    near_ends = [m / points for m in (3, 4, 5, 6, 8, 10)]
    regions = {"near 0 or 1": near_ends + [1 - s for s in near_ends], "between": [0.1 * i for i in range(1, 10)]}
    generator = torch.Generator().manual_seed(43)
    coverage = {}
    for region, shares in regions.items():
        share = torch.tensor(shares, dtype=torch.float64).repeat_interleave(repeats)
        confidence = torch.rand(share.shape[0], 1, points, generator=generator, dtype=torch.float64)
        stats = simplex_statistics(confidence, 1 - share, drops=(0.0,))
        estimate, se = stats["frac_above_0"], stats["se_frac_above_0"]
        for name, (low, high) in (
            ("clopper-pearson", fraction_interval(estimate, points)),
            ("normal", _normal_interval(estimate, se, points)),
        ):
            coverage[region, name] = float(((low <= share) & (share <= high)).double().mean())
    assert coverage["near 0 or 1", "clopper-pearson"] >= 0.94, coverage
    assert coverage["between", "clopper-pearson"] >= 0.94, coverage
    assert coverage["near 0 or 1", "normal"] < 0.93, coverage  # the test can tell the two apart
