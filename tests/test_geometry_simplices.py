"""k-simplices sampled with Dirichlet(1, ..., 1) weights: the weights are uniform over the simplex and
seeded, the triangle (k = 2) agrees with a dense area-uniform grid, and for a logistic regression, whose
high-confidence region is a half-space, the estimate's interval covers the exact volume fraction."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

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
    with pytest.raises(ValueError, match="points must be >= 1"):
        dirichlet_weights(0, 3, seed=0)
    with pytest.raises(ValueError, match="seed must be >= 0"):
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
    covered95 = cases = nontrivial = 0
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
                exact = _half_space_fraction(a[: k + 1], math.log(level / (1 - level)))
                estimate, se = stats[f"frac_above_{d:g}"], stats[f"se_frac_above_{d:g}"]
                low, high = fraction_interval(estimate, se, 3000, level=0.9999)
                assert float(low) - 1e-9 <= exact <= float(high) + 1e-9, (source, k, d, estimate, exact, se)
                low, high = fraction_interval(estimate, se, 3000)
                covered95 += float(low) - 1e-9 <= exact <= float(high) + 1e-9
                cases += 1
                nontrivial += 0.02 < exact < 0.98
    assert cases == 64 and covered95 >= 56 and nontrivial >= 16, (covered95, nontrivial)
