"""The warnings lst_fast gives its user name the user's line (the first frame outside lst_fast), through
`lst_fast.traverse` and through `LevelSetTraversal`, however deep in lst_fast they are raised."""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn

import lst_fast
from lst_fast.walk import prepared_model
from conftest import tiny_cnn


class Softmaxed(nn.Module):
    """A model that returns probabilities where LST expects logits."""

    def __init__(self):
        super().__init__()
        self.net = tiny_cnn(scale=12)

    def forward(self, x):
        return torch.softmax(self.net(x), 1)


class OutOfMemoryAbove(nn.Module):
    """Runs out of memory on a batch of more than `limit` images with autograd on (the walk's batches)."""

    def __init__(self, limit: int):
        super().__init__()
        self.net, self.limit = tiny_cnn(scale=12), limit

    def forward(self, x):
        if torch.is_grad_enabled() and x.shape[0] > self.limit:
            raise torch.OutOfMemoryError("stand-in: out of memory")
        return self.net(x)


def images(n):
    g = torch.Generator().manual_seed(5)
    return torch.rand(n, 1, 8, 8, generator=g), torch.rand(n, 1, 8, 8, generator=g)


def through_traverse(model, x, y, **settings):
    return lst_fast.traverse(model, x, y, **settings)


def through_the_class(model, x, y, **settings):
    return lst_fast.LevelSetTraversal(model, **settings)(x, y)


CALLS = [through_traverse, through_the_class]


def caught(match, category, call, model, x, y, **settings):
    """The one matching warning of a call, with the line of this file that made the call."""
    with warnings.catch_warnings(record=True) as records:
        warnings.simplefilter("always")
        call(model, x, y, **settings)
    found = [w for w in records if issubclass(w.category, category) and match in str(w.message)]
    assert len(found) == 1, [str(w.message) for w in records]
    return found[0]


def assert_at_the_call(record, call):
    """The warning names this file, at the line in `call` that calls lst_fast."""
    assert record.filename == __file__, record.filename
    body = call.__code__
    assert body.co_firstlineno < record.lineno <= body.co_firstlineno + 1, (record.lineno, body.co_firstlineno)


@pytest.mark.parametrize("call", CALLS, ids=["traverse", "LevelSetTraversal"])
def test_the_probabilities_warning_names_the_callers_line(call):
    x, y = images(3)
    record = caught("look like probabilities", UserWarning, call, Softmaxed(), x, y, iterations=2)
    assert_at_the_call(record, call)


@pytest.mark.parametrize("call", CALLS, ids=["traverse", "LevelSetTraversal"])
def test_the_emulated_bf16_warning_names_the_callers_line(call, monkeypatch):
    monkeypatch.setattr(prepared_model, "cpu_has_bf16_instructions", lambda: False)
    x, y = images(2)
    record = caught(
        "without bf16 instructions", RuntimeWarning, call, tiny_cnn(scale=12), x, y, iterations=2, precision="bf16"
    )
    assert_at_the_call(record, call)


@pytest.mark.parametrize("call", CALLS, ids=["traverse", "LevelSetTraversal"])
def test_the_out_of_memory_warning_names_the_callers_line(call):
    x, y = images(16)  # an automatic CPU batch holds at least 16 images: 16 runs out, 8 does too, 4 fits
    with warnings.catch_warnings(record=True) as records:
        warnings.simplefilter("always")
        result = call(OutOfMemoryAbove(limit=4), x, y, iterations=2)
    halved = [w for w in records if "ran out of cpu memory" in str(w.message)]
    assert [str(w.message).rsplit(" ", 1)[1] for w in halved] == ["8", "4"]
    for record in halved:
        assert_at_the_call(record, call)
    assert result.images.shape == x.shape
