"""Issue 15, the traverse path: no silent wrong result from a stale bf16 copy, half-precision inputs or
the bf16 walk; odd models and arguments get clear errors."""
from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

import lst_fast
from conftest import tiny_cnn


def images(n, c=1, size=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, c, size, size, generator=g), torch.rand(n, c, size, size, generator=g)


BF16 = dict(iterations=8, init_noise=0.0, step_size=0.1, threshold=0.05, precision="bf16")


class WithAct(nn.Module):
    """A parameter-free activation and a plain attribute that forward reads."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(3)
        self.conv = nn.Conv2d(1, 6, 3, padding=1)
        self.act = nn.ReLU()
        self.head = nn.Linear(6 * 64, 5)
        self.temperature = 1.0

    def forward(self, x):
        return self.head(self.act(self.conv(x)).flatten(1)) / self.temperature


def _swap_act(m):
    m.act = nn.Tanh()


def _temperature(m):
    m.temperature = 50.0


def _hook(m):
    m.head.register_forward_hook(lambda mod, inp, out: out * 0.02)


@pytest.mark.parametrize("change", [_swap_act, _temperature, _hook], ids=["submodule", "attribute", "hook"])
def test_a_change_between_bf16_calls_is_never_ignored(change):
    model = WithAct()
    x, y = images(6, seed=4)
    lst_fast.traverse(model, x, y, **BF16)  # a cache, if any, now holds the copy of the old model
    change(model)
    fresh = WithAct()
    change(fresh)
    after = lst_fast.traverse(model, x, y, **BF16)
    expected = lst_fast.traverse(fresh, x, y, **BF16)  # a model that was never walked before
    torch.testing.assert_close(after.images, expected.images, rtol=0, atol=0)
    torch.testing.assert_close(after.accepted_steps, expected.accepted_steps, rtol=0, atol=0)


class Unhashable(WithAct):
    def __eq__(self, other):
        return isinstance(other, Unhashable)

    __hash__ = None


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_an_unhashable_model_gets_a_clear_error(precision):
    # torch's own Module.eval()/modules() hash every module, so no mode can run it: say so up front.
    x, y = images(3, seed=5)
    with pytest.raises(TypeError, match=r"model \(Unhashable\) is unhashable.*__hash__"):
        lst_fast.traverse(Unhashable(), x, y, **{**BF16, "precision": precision})
