"""A rank claims only what the files prove: a NaN confidence is no value (n/a), never "below", and a model
ranks above another only on at least MIN_SHARED_SOURCES shared sources with a value; the rows under it are
unranked and marked in every file the leaderboard writes."""

from __future__ import annotations

import csv
import io
import json
import textwrap

import torch

from lst_fast.evaluation.leaderboard import MIN_SHARED_SOURCES, rank_models, resample_counts
from lst_fast.evaluation.pool import build_pool
from lst_fast.geometry import simplex_statistics, triangle_statistics, triangle_weights
from lst_fast.run_environment import QUIET_ENVIRONMENT
from conftest import cli_exit_code

WRAPPED = """
import torch
from torch import nn

from lst_fast.models import load_model


class Wrapped(nn.Module):
    def __init__(self, keep=None, nan_every=0):
        super().__init__()
        self.net = load_model("cnn")
        self.keep, self.nan_every = keep, nan_every
        self.lst_input_size = (1, 28, 28)

    def forward(self, x):
        logits = self.net(x)
        if self.nan_every and x.shape[0] % self.nan_every == 0:  # the triangle batches (66 points each)
            return logits * float("nan")
        if self.keep is not None:  # wrong on every class but `keep`: few sources on the pool
            kept = torch.isin(logits.argmax(1), torch.tensor(self.keep, device=x.device))
            logits = torch.where(kept[:, None], logits, logits.roll(1, 1))
        return logits


def build(keep=None, nan_every=0):
    return Wrapped(keep, nan_every)
"""


def test_a_nan_confidence_is_no_value_not_below():
    weights = triangle_weights(2)
    confidence = torch.full((2, weights.shape[0]), 0.9, dtype=torch.float64)
    confidence[1, 3] = float("nan")
    stats = triangle_statistics(confidence, weights)
    assert stats["frac_above_0.2"][0] == 1.0 and stats["frac_above_0.2"][1].isnan()  # on main: 0.8, "below"
    cube = torch.full((2, 3, 4), 0.9, dtype=torch.float64)
    cube[1, 0, 0] = float("nan")
    fractions = simplex_statistics(cube, torch.tensor([0.9, 0.9], dtype=torch.float64))["frac_above_0.2"]
    assert fractions[0] == 1.0 and fractions[1].isnan()


def test_a_model_ranks_above_another_only_on_enough_shared_sources():
    sources = 40
    weights = resample_counts(sources, 200, seed=0)
    strong = torch.full((sources,), 0.9, dtype=torch.float64)
    weak = torch.full((sources,), 0.1, dtype=torch.float64)
    few = torch.full((sources,), float("nan"), dtype=torch.float64)
    few[: MIN_SHARED_SOURCES - 1] = 1.0  # perfect on too few sources: not ranked, and above no one
    apart = torch.full((sources,), float("nan"), dtype=torch.float64)
    apart[MIN_SHARED_SOURCES - 1 : 2 * MIN_SHARED_SOURCES + 2] = 0.5  # enough sources, too few shared with `few`
    ranks, above = rank_models(torch.stack([strong, weak, few, apart]), weights, higher_first=True)
    assert ranks == [1, 3, None, 2] and above[1] == [0, 3] and above[3] == [0]
    enough = few.clone()
    enough[MIN_SHARED_SOURCES - 1] = 1.0  # one more source: the minimum, so it ranks (above `strong`)
    assert rank_models(torch.stack([strong, enough]), weights, higher_first=True)[0] == [2, 1]


def _keep_two(labels):
    """Classes that hold exactly 2 of the pool's images."""
    counts = torch.bincount(torch.tensor(labels))
    pair = [c for c in range(len(counts)) if counts[c] == 2]
    return pair[:1] if pair else [c for c in range(len(counts)) if counts[c] == 1][:2]


def test_nan_outputs_and_two_of_six_sources_are_unranked_and_marked_in_every_format(tmp_path, capsys):
    """Issue cases: a model with NaN outputs on the triangle batches got 0.000 [0.000, 0.000] and ranked last;
    a model evaluated on 2 of the pool's 6 sources ranked 1st with [1.000, 1.000]."""
    (tmp_path / "wrapped.py").write_text(textwrap.dedent(WRAPPED))
    out = tmp_path / "board"
    args = ["leaderboard", "--data", "fashion-mnist-sample", "--num-samples", "6", "--rounds", "2"]
    args += ["--resamples", "50", "--iterations", "2", "--chunk-size", "8", "--no-progress", "--out", str(out)]
    # the pool of cnn and cnn-robust as the leaderboard builds it (not a whole first leaderboard of the two):
    # the wrapped models are added to it, and `keep` is read from it
    pool, _ = build_pool(["cnn", "cnn-robust"], "fashion-mnist-sample", 6, 0.6, rounds=2, env=QUIET_ENVIRONMENT)
    out.mkdir()
    pool.save(out / "pool.json")
    keep = _keep_two(json.loads((out / "pool.json").read_text())["labels"])
    few, nan = f"py:{tmp_path / 'wrapped.py'}:build(keep={keep})", f"py:{tmp_path / 'wrapped.py'}:build(nan_every=66)"
    assert cli_exit_code([*args, "--model", "cnn", "cnn-robust", few, nan]) == 0
    capsys.readouterr()
    board = json.loads((out / "leaderboard.json").read_text())
    assert board["min_shared_sources"] == MIN_SHARED_SOURCES
    rows = {row["model"]: row for row in board["rows"]}
    assert rows[few]["sources"] == 2 and rows[nan]["sources"] == 6
    for spec, with_value in ((few, 2), (nan, 0)):
        row = rows[spec]
        assert row["rank"] is None and row["rank_label"] == "-" and row["too_few_sources"], row
        assert row["sources_with_value"] == with_value and f"at least {MIN_SHARED_SOURCES}" in row["note"]
    assert rows[nan]["values"]["frac_above_0.2"]["mean"] is None  # n/a, not 0.000
    assert rows["cnn"]["rank"] == 1 and not rows["cnn"]["too_few_sources"]
    markdown = (out / "leaderboard.md").read_text()
    assert (
        f"| - | `{few}` |" in markdown
        and "| 2 / 6 (too few) |" in markdown
        and "| 6 / 6 (0 with a value) |" in markdown
    )
    nan_line = next(line for line in markdown.splitlines() if f"`{nan}`" in line)
    assert "n/a" in nan_line and "0.000 [0.000, 0.000]" not in nan_line
    latex = (out / "leaderboard.tex").read_text()
    assert "2/6 (too few)" in latex and "6/6 (0 with a value)" in latex
    table = {row["model"]: row for row in csv.DictReader(io.StringIO((out / "leaderboard.csv").read_text()))}
    assert table[few]["rank"] == "-" and "a rank needs at least" in table[few]["note"]
    assert table[nan]["rank"] == "-" and table["cnn"]["note"] == ""
