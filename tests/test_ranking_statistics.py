"""The leaderboard's statistics against known answers, on synthetic per-source values where the truth is
known: a small but consistent paired difference ranks two models apart although their own intervals
overlap (a bootstrap that resamples each model on its own cannot tell them apart), identical models share
rank 1, a model with part of the sources is compared on the shared ones, a column with no value ranks no
one, and the 95% interval covers the true mean about 95% of the time."""

from __future__ import annotations

import torch

from lst_fast.evaluation.leaderboard import _interval, bootstrap_means, rank_models, resample_counts

SOURCES, RESAMPLES = 200, 400


def _consistent_pair(seed: int = 0) -> torch.Tensor:
    """Two models over sources that differ a lot (spread 1.0): model 0 is model 1 + 0.02 + small noise."""
    g = torch.Generator().manual_seed(seed)
    spread = torch.rand(SOURCES, generator=g, dtype=torch.float64)
    return torch.stack([spread + 0.02 + 0.005 * torch.randn(SOURCES, generator=g, dtype=torch.float64), spread])


def test_a_small_consistent_paired_difference_ranks_apart_though_the_intervals_overlap():
    values = _consistent_pair()
    weights = resample_counts(SOURCES, RESAMPLES, seed=1)
    low, high = (torch.tensor([c[k] for c in _interval(values, weights)]) for k in ("low", "high"))
    assert low[0] < high[1]  # each model's own interval overlaps the other's
    ranks, above = rank_models(values, weights, higher_first=True)
    assert ranks == [1, 2] and above[1] == [0]
    lower, _ = rank_models(values, weights, higher_first=False)
    assert lower == [2, 1]
    # The planted mistake: resampling each model on its own (independent resamples) loses the pairing,
    # and the difference of the two models' means no longer excludes zero.
    own = torch.stack(
        [bootstrap_means(values[k : k + 1], resample_counts(SOURCES, RESAMPLES, seed=10 + k))[:, 0] for k in range(2)]
    )
    assert float(torch.quantile(own[0] - own[1], 0.025)) < 0


def test_identical_models_share_rank_1():
    values = _consistent_pair()[1].expand(3, SOURCES).clone()
    ranks, above = rank_models(values, resample_counts(SOURCES, RESAMPLES, seed=2), higher_first=True)
    assert ranks == [1, 1, 1] and above == [[], [], []]


def test_a_model_on_part_of_the_sources_is_compared_on_the_shared_ones():
    values = _consistent_pair()
    # Model 1 has only the easiest half of the sources: its own mean is higher than model 0's ...
    easy = values[1].argsort()[SOURCES // 2 :]
    part = torch.full((SOURCES,), float("nan"), dtype=torch.float64)
    part[easy] = values[1, easy]
    values = torch.stack([values[0], part])
    assert float(values[1].nanmean()) > float(values[0].mean())
    # ... but on the sources both have, model 0 is consistently higher: it ranks first.
    ranks, _ = rank_models(values, resample_counts(SOURCES, RESAMPLES, seed=3), higher_first=True)
    assert ranks == [1, 2]


def test_a_column_with_no_value_ranks_no_one():
    weights = resample_counts(SOURCES, RESAMPLES, seed=4)
    empty = torch.full((3, SOURCES), float("nan"), dtype=torch.float64)
    assert rank_models(empty, weights, higher_first=True) == ([None, None, None], [[], [], []])
    values = _consistent_pair()
    values = torch.cat([values, empty[:1]])  # a model without sources gets no rank; the others still do
    assert rank_models(values, weights, higher_first=True)[0] == [1, 2, None]


def test_the_95_percent_interval_covers_the_true_mean_about_95_percent_of_the_time():
    g = torch.Generator().manual_seed(5)
    data_sets, sources = 400, 60
    values = torch.rand(data_sets, sources, generator=g, dtype=torch.float64) ** 2  # in [0, 1], skewed; mean 1/3
    weights = resample_counts(sources, 300, seed=6)
    cells = _interval(values, weights)
    covered = sum(c["low"] <= 1 / 3 <= c["high"] for c in cells) / data_sets
    assert 0.91 <= covered <= 0.98, covered  # 0.935 here; the binomial spread of 400 data sets is about 0.011
