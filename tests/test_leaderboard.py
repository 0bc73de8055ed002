"""`lst-fast leaderboard` end to end on the shipped sample: one shared pool, resume, an added model that runs
alone and leaves the old rows as they were, a refused pool, sensible intervals, paired ranks, and the same
leaderboard from two processes under torchrun."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from lst_fast.evaluation import EvalConfig
from lst_fast.evaluation.leaderboard import (
    Ranking,
    bootstrap_means,
    rank_models,
    resample_counts,
    run_leaderboard,
    write_leaderboard,
)
from lst_fast.run_environment import QUIET_ENVIRONMENT
from conftest import torch_threads

ROOT = Path(__file__).resolve().parents[1]
BASE = EvalConfig(rounds=3, iterations=4, chunk_size=8)
# A 3-point-per-edge triangle grid (6 points, not 66): triangles were most of the end-to-end test's time, and
# it reads no triangle value beyond its range.
POOLED = BASE.replace(num_samples=12, min_confidence=0.6, triangle_n=2)
SMALL = dict(base=POOLED, ranking=Ranking(resamples=200), env=QUIET_ENVIRONMENT)
# 7 sources in chunks of 4 and 3 rounds: both ranks get LST chunks and triangle pairs, the last chunk is short,
# and the 7 sources are enough to rank (MIN_SHARED_SOURCES); --triangle-n 3: 10 points a triangle, not 66
CLI = ["--data", "fashion-mnist-sample", "--num-samples", "7", "--rounds", "3", "--iterations", "4"]
CLI += ["--chunk-size", "4", "--resamples", "200", "--triangle-n", "3", "--no-progress"]


def _mtimes(folder: Path):
    """When each computed file (results, scan) was written (tables.json is rewritten by every run)."""
    files = [*(folder / "results").iterdir(), folder / "scan.json"]
    return {p: p.stat().st_mtime_ns for p in files}


def _values(board):
    return {row["model"]: (row["sources"], row["values"]) for row in board["rows"]}


def test_leaderboard_end_to_end_resume_and_an_added_model(tmp_path, monkeypatch):
    out = tmp_path / "board"
    board = run_leaderboard(["cnn", "cnn-robust"], "fashion-mnist-sample", out, **SMALL)
    for suffix in ("md", "tex", "csv", "json", "png"):
        assert (out / f"leaderboard.{suffix}").stat().st_size > 0
    pool = json.loads((out / "pool.json").read_text())
    assert len(pool["indices"]) == 12 and pool["scan"]["scanned"] < 100
    for model in ("cnn", "cnn-robust"):
        assert json.loads((out / model / "config.json").read_text())["pool"] == pool["digest"]
    assert [row["sources"] for row in board["rows"]] == [12, 12] and board["rank_by"] == "frac_above_0.2"
    for row in board["rows"]:
        for key, cell in row["values"].items():
            assert cell["low"] <= cell["mean"] + 1e-12 and cell["mean"] <= cell["high"] + 1e-12, (key, cell)
        assert row["values"]["rms"]["high"] > row["values"]["rms"]["low"]  # a real interval, not a point
        assert 0 <= row["values"]["frac_above_0.2"]["low"] <= row["values"]["frac_above_0.2"]["high"] <= 1
    md = (out / "leaderboard.md").read_text()
    assert "| `cnn` |" in md and "95% bootstrap interval" in md and "LPIPS" in md
    assert (out / "leaderboard.csv").read_text().startswith("rank,model,sources,pool,accuracy_mean")

    # Resume: a deleted result file of one model is all that runs again.
    (out / "cnn" / "results" / "round01_chunk00001.safetensors").unlink()
    robust = _mtimes(out / "cnn-robust")
    again = run_leaderboard(["cnn", "cnn-robust"], "fashion-mnist-sample", out, **SMALL)
    assert _mtimes(out / "cnn-robust") == robust
    assert (out / "cnn" / "results" / "round01_chunk00001.safetensors").is_file()
    assert _values(again) == _values(board)

    # An added model: evaluated alone on the fixed pool; the old folders and rows stay as they were.
    before, pool_text = _mtimes(out / "cnn") | _mtimes(out / "cnn-robust"), (out / "pool.json").read_text()
    added = run_leaderboard(["cnn", "cnn-robust", "vit"], "fashion-mnist-sample", out, **SMALL)
    assert (out / "pool.json").read_text() == pool_text
    assert {p: t for p, t in (_mtimes(out / "cnn") | _mtimes(out / "cnn-robust")).items()} == before
    values = _values(added)
    assert {m: values[m] for m in ("cnn", "cnn-robust")} == _values(board)
    assert 2 <= values["vit"][0] <= 12

    # With the lpips package (a stand-in here: the real one downloads its weights), LPIPS is a column.
    assert "lpips" not in added["columns"] and added["lpips"].startswith("omitted: the lpips package")
    import types

    import lst_fast.metrics

    monkeypatch.setitem(sys.modules, "lpips", types.ModuleType("lpips"))
    monkeypatch.setattr(lst_fast.metrics, "lpips_distance", lambda x, t: (x - t).abs().flatten(1).mean(1))
    with_lpips = write_leaderboard(out, ["cnn", "cnn-robust", "vit"], Ranking(resamples=200))
    assert with_lpips["lpips"] == "included" and "LPIPS" in (out / "leaderboard.md").read_text()
    for row in with_lpips["rows"]:
        cell = row["values"]["lpips"]
        assert 0 < cell["low"] <= cell["mean"] <= cell["high"], cell
    assert _values(with_lpips)["cnn"][1]["rms"] == values["cnn"][1]["rms"]

    # A pool of other settings or another data set is refused.
    with pytest.raises(ValueError, match="other settings"):
        run_leaderboard(["cnn"], "fashion-mnist-sample", out, **{**SMALL, "base": POOLED.replace(num_samples=13)})
    with pytest.raises(ValueError, match="another data set"):
        run_leaderboard(["cnn"], "fashion-mnist", out, **SMALL)


def test_intervals_resample_sources_the_same_way_for_every_model_so_ranks_are_paired():
    torch.manual_seed(0)
    spread = torch.rand(200, dtype=torch.float64)  # the sources differ a lot ...
    values = torch.stack([spread + 0.02, spread, spread + 0.02 * torch.randn(200, dtype=torch.float64)])
    weights = resample_counts(200, 500, seed=1)
    boots = bootstrap_means(values, weights)
    low, high = boots.quantile(0.025, 0), boots.quantile(0.975, 0)
    assert low[0] < high[1]  # ... so the intervals of model 0 and model 1 overlap,
    ranks, above = rank_models(values, weights, higher_first=True)
    assert ranks[0] == 1 and 0 in above[1]  # but the paired difference tells them apart
    assert ranks[1] == ranks[2] == 2  # a difference within the noise: a shared rank
    lower, _ = rank_models(values, weights, higher_first=False)
    assert lower[1] == 1 and lower[0] > 1
    nan = values.clone()
    nan[1, :100] = float("nan")  # a model with half of the sources: its mean is over the ones it has
    assert torch.allclose(bootstrap_means(nan, torch.ones(1, 200, dtype=torch.float64))[0, 1], spread[100:].mean())


def test_leaderboard_under_torchrun_equals_one_process(tmp_path, capsys):
    from lst_fast.cli import main

    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    args = ["-m", "lst_fast", "leaderboard", "--model", "cnn", "cnn-robust", *CLI]  # no timm in 3 processes
    with torch_threads(1):  # one process in this one (a torch start fewer), computing as each worker does
        assert main([*args[2:], "--out", str(tmp_path / "one")]) == 0
    one_stdout = capsys.readouterr().out
    two = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", *args[1:]]
        + ["--out", str(tmp_path / "two")],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert two.returncode == 0, two.stderr[-3000:]
    boards = [json.loads((tmp_path / k / "leaderboard.json").read_text()) for k in ("one", "two")]
    assert _values(boards[0]) == _values(boards[1])
    assert boards[0]["pool"]["digest"] == boards[1]["pool"]["digest"]
    assert all(row["config"]["triangle_n"] == 3 for board in boards for row in board["rows"])
    caption = (tmp_path / "two" / "leaderboard.md").read_text()
    assert "each on a grid of 10 points (n + 1 on each edge, n = 3)" in caption
    assert "| rank | model |" in one_stdout
