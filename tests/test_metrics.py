"""lst_fast's own plumbing around LPIPS, with a fake `lpips` module (the real package and its weights
need a network): inputs scaled to [-1, 1], grey images repeated to 3 channels, one batch, one distance
per image, and clear errors."""

from __future__ import annotations

import sys
import types

import pytest
import torch

from lst_fast.metrics import lpips_distance


class FakeLPIPS(torch.nn.Module):
    """Stands in for lpips.LPIPS: returns (N, 1, 1, 1) mean absolute differences and records its calls."""

    calls: list = []
    built: list = []

    def __init__(self, net="alex", verbose=True):
        super().__init__()
        FakeLPIPS.built.append({"net": net, "verbose": verbose})
        self.scale = torch.nn.Parameter(torch.ones(()))

    def forward(self, a, b):
        FakeLPIPS.calls.append((a.detach().clone(), b.detach().clone(), self.training))
        return ((a - b).abs().flatten(1).mean(1) * self.scale).view(-1, 1, 1, 1)


@pytest.fixture
def fake_lpips(monkeypatch):
    module = types.ModuleType("lpips")
    module.LPIPS = FakeLPIPS
    FakeLPIPS.calls, FakeLPIPS.built = [], []
    monkeypatch.setitem(sys.modules, "lpips", module)
    return module


def test_lpips_scales_to_minus_one_one_and_batches(fake_lpips):
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(5, 3, 16, 16, generator=gen)
    target = torch.rand(5, 3, 16, 16, generator=gen)
    x[0] = 0.0
    target[0] = 1.0
    d = lpips_distance(x, target, net="vgg")
    assert FakeLPIPS.built == [{"net": "vgg", "verbose": False}]
    assert len(FakeLPIPS.calls) == 1  # one batch
    a, b, training = FakeLPIPS.calls[0]
    assert not training  # eval mode
    assert a.shape == b.shape == (5, 3, 16, 16) and a.dtype == torch.float32
    assert torch.equal(a, x * 2 - 1) and torch.equal(b, target * 2 - 1)  # x first, [0, 1] -> [-1, 1]
    assert a[0].eq(-1).all() and b[0].eq(1).all()
    assert d.shape == (5,)
    torch.testing.assert_close(d, 2 * (x - target).abs().flatten(1).mean(1))
    assert d[0] == 2.0


def test_lpips_repeats_grey_images_and_takes_any_float_dtype(fake_lpips):
    x = torch.rand(3, 1, 8, 8, dtype=torch.float64)
    target = torch.rand(3, 1, 8, 8, dtype=torch.float64)
    d = lpips_distance(x, target)
    a, b, _ = FakeLPIPS.calls[0]
    assert a.shape == (3, 3, 8, 8) and a.dtype == torch.float32
    for c in range(3):
        assert torch.equal(a[:, c], (x[:, 0].float() * 2 - 1))
        assert torch.equal(b[:, c], (target[:, 0].float() * 2 - 1))
    assert FakeLPIPS.built[0]["net"] == "alex" and d.shape == (3,)


def test_lpips_bad_arguments(fake_lpips):
    with pytest.raises(ValueError, match="of one shape"):
        lpips_distance(torch.rand(2, 3, 8, 8), torch.rand(3, 3, 8, 8))
    with pytest.raises(ValueError, match=r"\(N, C, H, W\)"):
        lpips_distance(torch.rand(3, 8, 8), torch.rand(3, 8, 8))
    with pytest.raises(ValueError, match="1- or 3-channel images, got 2"):
        lpips_distance(torch.rand(2, 2, 8, 8), torch.rand(2, 2, 8, 8))
    assert FakeLPIPS.calls == []


def test_lpips_missing_package_says_how_to_get_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "lpips", None)  # import lpips raises ImportError
    with pytest.raises(RuntimeError, match=r"needs the `lpips` package \(pip install lpips\)"):
        lpips_distance(torch.rand(1, 1, 16, 16), torch.rand(1, 1, 16, 16))


def test_lpips_missing_weights_say_where_they_come_from(monkeypatch):
    module = types.ModuleType("lpips")

    def no_network(net="alex", verbose=True):
        raise OSError("urlopen error: no network")

    module.LPIPS = no_network
    monkeypatch.setitem(sys.modules, "lpips", module)
    with pytest.raises(RuntimeError, match="could not load the LPIPS alex weights.*no network.*torch hub cache"):
        lpips_distance(torch.rand(1, 3, 16, 16), torch.rand(1, 3, 16, 16))
