"""Linear paths, triangles and distances against direct evaluation and scikit-image."""
from __future__ import annotations

import pytest
import torch

from lst_fast.geometry import line_weights, linear_path_confidence, simplex_confidence, triangle_confidence, triangle_weights
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
        ref = metrics.structural_similarity(x[i, 0].numpy(), y[i, 0].numpy(), gaussian_weights=True, sigma=1.5,
                                            use_sample_covariance=False, data_range=1.0)
        assert float(ours[i]) == pytest.approx(ref, abs=1e-10)
    assert torch.allclose(ssim(x, x), torch.ones(3, dtype=torch.float64))


def test_distances():
    x = torch.zeros(2, 1, 16, 16)
    y = torch.full((2, 1, 16, 16), 0.5)
    d = distances(x, y)
    torch.testing.assert_close(d["l2"], torch.full((2,), 8.0, dtype=torch.float64))
    torch.testing.assert_close(d["rms"], torch.full((2,), 0.5, dtype=torch.float64))
    torch.testing.assert_close(d["linf"], torch.full((2,), 0.5, dtype=torch.float64))
