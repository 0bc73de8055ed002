"""Geometry with several samples in one model pass: every point is evaluated with its own sample's label.

Compared with a naive loop, one sample and one point at a time. Uses only geometry's public functions."""

from __future__ import annotations

import pytest
import torch

from lst_fast.geometry import linear_path_confidence, simplex_confidence, triangle_confidence
from conftest import PerSample, tiny_cnn

N, C, S = 7, 1, 8


@pytest.fixture(scope="module")
def setup():
    model = PerSample(tiny_cnn(channels=C, classes=5, size=S, scale=2.0, seed=3)).eval()
    gen = torch.Generator().manual_seed(5)
    source, end1, end2 = (torch.rand(N, C, S, S, generator=gen) for _ in range(3))
    label = torch.tensor([0, 1, 2, 3, 4, 2, 0])  # a different label from the neighbour's
    return model, source, end1, end2, label


def naive(model, vertices, weights, label):
    """Confidence of label[n] at each convex combination, one sample and one point at a time."""
    out = torch.empty(vertices.shape[0], weights.shape[0], dtype=torch.float64)
    with torch.no_grad():
        for n in range(vertices.shape[0]):
            for p in range(weights.shape[0]):
                point = sum(float(weights[p, k]) * vertices[n, k].double() for k in range(vertices.shape[1]))
                logits = model(point.float()[None]).double()
                out[n, p] = torch.softmax(logits, 1)[0, label[n]]
    return out


def per_sample_bytes(points):
    return points * C * S * S * 4


@pytest.mark.parametrize("samples_per_chunk", [3, N, None])  # a remainder chunk, one chunk, the default
def test_triangle_points_use_their_own_label(setup, samples_per_chunk):
    model, source, end1, end2, label = setup
    n_grid = 4
    points = (n_grid + 1) * (n_grid + 2) // 2
    kw = {} if samples_per_chunk is None else {"chunk_bytes": samples_per_chunk * per_sample_bytes(points)}
    got = triangle_confidence(model, source, end1, end2, label, n=n_grid, **kw)
    from lst_fast.geometry import triangle_weights

    want = naive(model, torch.stack([source, end1, end2], 1), triangle_weights(n_grid), label)
    assert got.shape == (N, points)
    torch.testing.assert_close(got.double(), want, rtol=1e-5, atol=1e-6)


def test_linear_paths_and_simplices_use_their_own_label(setup):
    model, source, end1, end2, label = setup
    got = linear_path_confidence(model, source, end1, label, steps=5, chunk_bytes=2 * per_sample_bytes(5))
    from lst_fast.geometry import line_weights

    want = naive(model, torch.stack([source, end1], 1), line_weights(5), label)
    torch.testing.assert_close(got.double(), want, rtol=1e-5, atol=1e-6)
    weights = torch.tensor([[0.2, 0.3, 0.5], [1.0, 0.0, 0.0], [0.0, 0.5, 0.5]], dtype=torch.float64)
    vertices = torch.stack([source, end1, end2], 1)
    got = simplex_confidence(model, vertices, weights, label, chunk_bytes=4 * per_sample_bytes(3))
    torch.testing.assert_close(got.double(), naive(model, vertices, weights, label), rtol=1e-5, atol=1e-6)


def test_the_labels_matter(setup):
    """The comparison above can fail: other labels give other confidences on this model."""
    model, source, end1, end2, label = setup
    a = triangle_confidence(model, source, end1, end2, label, n=2)
    b = triangle_confidence(model, source, end1, end2, label.roll(1), n=2)
    assert (a - b).abs().max() > 1e-2
