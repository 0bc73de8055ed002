"""Cross-class derangements for the evaluation's rounds."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from lst_fast.evaluation.targets import cross_class_derangement, round_targets


@settings(max_examples=50, deadline=None)
@given(counts=st.lists(st.integers(1, 12), min_size=2, max_size=10), seed=st.integers(0, 2**16))
def test_every_source_gets_one_target_of_another_class(counts, seed):
    labels = torch.cat([torch.full((c,), k) for k, c in enumerate(counts)])
    labels = labels[torch.randperm(labels.numel(), generator=torch.Generator().manual_seed(seed))]
    if 2 * max(counts) > sum(counts):
        with pytest.raises(ValueError, match="no cross-class derangement exists"):
            cross_class_derangement(labels, torch.Generator().manual_seed(seed))
        return
    target = cross_class_derangement(labels, torch.Generator().manual_seed(seed))
    assert sorted(target.tolist()) == list(range(labels.numel()))  # a permutation
    assert (labels[target] != labels).all()


def test_rounds_are_reproducible_and_differ():
    labels = torch.arange(40) % 10
    a, b = round_targets(labels, 5, seed=3), round_targets(labels, 5, seed=3)
    assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))
    assert not torch.equal(a[0], a[1])
    with pytest.raises(ValueError, match="rounds must be"):
        round_targets(labels, 0, seed=0)
