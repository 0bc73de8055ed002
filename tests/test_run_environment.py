"""One run environment, one resolution per model: `lst-fast leaderboard` resolves each model once for the
pool, its scan and its evaluation (a RobustBench checkpoint was loaded twice before), and the command
line builds one RunEnvironment from its flags."""

from __future__ import annotations

import argparse
from collections import Counter

import lst_fast.models
from lst_fast.cli import arguments
from lst_fast.evaluation import EvalConfig
from lst_fast.evaluation.leaderboard import Ranking, run_leaderboard
from lst_fast.run_environment import QUIET_ENVIRONMENT, RunEnvironment

# triangle_n=2 (6 points a triangle, not 66): only the models' resolutions are counted here
TINY = EvalConfig(rounds=2, iterations=2, chunk_size=8, num_samples=8, min_confidence=0.6, triangle_n=2)


def _counting(monkeypatch) -> Counter:
    """Replace resolve_model by a stand-in that counts its calls per model spec, then resolves."""
    counts: Counter = Counter()
    real = lst_fast.models.resolve_model

    def counted(spec, *args, **kwargs):
        counts[spec] += 1
        return real(spec, *args, **kwargs)

    monkeypatch.setattr(lst_fast.models, "resolve_model", counted)
    return counts


def test_the_leaderboard_resolves_each_model_once(tmp_path, monkeypatch):
    counts = _counting(monkeypatch)
    models, ranking = ["cnn", "cnn-robust"], Ranking(resamples=20)
    run_leaderboard(models, "fashion-mnist-sample", tmp_path, TINY, ranking=ranking, env=QUIET_ENVIRONMENT)
    assert counts == {"cnn": 1, "cnn-robust": 1}  # the pool, the scan and the evaluation share one
    counts.clear()
    run_leaderboard(models, "fashion-mnist-sample", tmp_path, TINY, ranking=ranking, env=QUIET_ENVIRONMENT)
    assert counts == {"cnn": 1, "cnn-robust": 1}  # resumed: the pool and scans reused, each still once


def test_the_command_line_builds_one_environment_from_its_flags():
    args = argparse.Namespace(data_root="/d", model_dir="/m", workers=3, batch_size=16, graph=True, no_progress=True)
    env = arguments.run_environment(args, "cpu")
    assert env == RunEnvironment("cpu", "/d", "/m", workers=3, batch_size=16, progress=False, graph=True)
    bare = arguments.run_environment(argparse.Namespace(), "cpu")  # a subcommand without those flags
    assert bare == RunEnvironment("cpu")
