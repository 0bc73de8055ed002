"""The k-simplices in the evaluation, the leaderboard and compare (lst_fast.evaluation.simplices): off by
default (the files and tables of a run without them do not change), resumable, one table row per k, the
same subsets and weights for every source and model, one leaderboard column per k that can rank, and the
fraction against k in compare's figure."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch

from lst_fast.evaluation import EvalConfig, EvaluationStore, run_evaluation, write_comparison
from lst_fast.evaluation.finished import load_finished
from lst_fast.evaluation.leaderboard import Ranking, run_leaderboard
from lst_fast.evaluation.simplices import (
    SimplexSettings,
    forwards_per_source,
    fraction_by_k_figure,
    simplex_subsets,
    simplex_weights,
)
from lst_fast.evaluation.tables import table2_per_source
from lst_fast.geometry import simplex_statistics
from lst_fast.run_environment import QUIET_ENVIRONMENT
from conftest import cli_exit_code

ROOT = Path(__file__).resolve().parents[1]
SMALL = dict(data="fashion-mnist-sample", num_samples=10, rounds=3, iterations=4, chunk_size=6)


def _strict_json(path: Path):
    """tables.json read back refusing NaN and infinities, which JSON does not have."""

    def refuse(constant):
        raise ValueError(f"{path} holds {constant}")

    return json.loads(path.read_text(), parse_constant=refuse)


def _mtimes(folder: Path, pattern: str):
    return {p.name: p.stat().st_mtime_ns for p in sorted((folder / "results").glob(pattern))}


def test_subsets_weights_and_budget_are_seeded_and_shared():
    assert simplex_subsets(5, 2, 0, seed=0) == [(a, b) for a in range(5) for b in range(a + 1, 5)]
    chosen = simplex_subsets(5, 3, 4, seed=0)
    assert len(chosen) == 4 and len(set(chosen)) == 4 and chosen == simplex_subsets(5, 3, 4, seed=0)
    assert chosen != simplex_subsets(5, 3, 4, seed=1) and simplex_subsets(5, 5, 4, seed=0) == [(0, 1, 2, 3, 4)]
    w = simplex_weights(3, 50, seed=0)
    assert w.shape == (51, 4) and w[0].tolist() == [1.0, 0.0, 0.0, 0.0] and torch.equal(w, simplex_weights(3, 50, 0))
    assert not torch.equal(w[1:, :3], simplex_weights(2, 50, 0)[1:])  # each k its own draws
    # R = 5, all subsets: 10 + 10 + 5 + 1 simplices of (points + 1) forwards each
    assert forwards_per_source(5, SimplexSettings(points=32)) == 26 * 33
    assert forwards_per_source(5, SimplexSettings(points=32, subsets=4)) == (4 + 4 + 4 + 1) * 33
    for bad, match in (
        (SimplexSettings(points=1), r"--simplex-points must be an integer in \[2, 1,000,000\]"),
        (SimplexSettings(subsets=-1), r"--simplex-subsets must be an integer in \[0, 1,000,000\]"),
        (SimplexSettings(points=10**12), r"--simplex-points must be an integer in \[2, 1,000,000\]"),
    ):
        with pytest.raises(ValueError, match=match):
            bad.validate(3)
    with pytest.raises(ValueError, match="need --rounds >= 2"):
        SimplexSettings().validate(1)


def test_off_by_default_then_added_resumed_and_tabled(tmp_path):
    cfg = EvalConfig(**SMALL)
    plain = run_evaluation(cfg, tmp_path, env=QUIET_ENVIRONMENT)
    assert "simplices" not in plain and not list((tmp_path / "results").glob("simplex_*"))
    assert "k-simplices" not in (tmp_path / "tables.md").read_text()
    lst_files = _mtimes(tmp_path, "[rt]*")

    settings = SimplexSettings(points=24)
    tables = run_evaluation(cfg, tmp_path, env=QUIET_ENVIRONMENT, simplices=settings)
    assert _mtimes(tmp_path, "[rt]*") == lst_files  # the LST chunks and triangles are reused
    assert {k: tables[k] for k in plain} == plain
    section = _strict_json(tmp_path / "tables.json")["simplices"]
    assert section == json.loads(json.dumps(tables["simplices"]))
    assert [row["k"] for row in section["rows"]] == [2, 3] and [r["simplices"] for r in section["rows"]] == [3, 1]
    assert section["forwards_per_source"] == 4 * 25 and section["sources"] == 10
    md = (tmp_path / "tables.md").read_text()
    assert "## k-simplices" in md and "| 2 | 3 |" in md and "66-point grid minus the area-uniform" in md

    # the rows are simplex_statistics of the files: p at the source vertex is Table 2's, and each k
    # averages its simplices
    store = EvaluationStore(tmp_path)
    files = [store.read_simplex(2, i) for i in range(3)]
    triangles = [store.read_triangles(r1, r2) for r1, r2 in ((0, 1), (0, 2), (1, 2))]
    torch.testing.assert_close(files[0]["p_source"], triangles[0][:, 0], rtol=0, atol=1e-6)
    stats = simplex_statistics(torch.stack([f["confidence"] for f in files], 1), files[0]["p_source"])
    assert section["rows"][0]["frac_above_0.1"][0] == pytest.approx(float(stats["frac_above_0.1"].mean()))
    grid = table2_per_source(triangles, cfg.triangle_n, 10)
    difference = float((grid["frac_above_0"] - stats["frac_above_0"]).mean())
    assert section["grid_vs_area"]["frac_above_0"]["difference"] == pytest.approx(difference)

    # resume: a deleted simplex file is all that is computed again, to the same tables
    simplex_files = _mtimes(tmp_path, "simplex_*")
    store.simplex_path(2, 1).unlink()
    again = run_evaluation(cfg, tmp_path, env=QUIET_ENVIRONMENT, simplices=settings)
    changed = {n for n, t in _mtimes(tmp_path, "simplex_*").items() if simplex_files[n] != t}
    assert changed == {"simplex_k02_s001.safetensors"} and again == tables

    # other simplex settings do not reuse these files: they are refused, by name
    with pytest.raises(ValueError, match="simplex_k02_s000.safetensors does not belong"):
        run_evaluation(cfg, tmp_path, env=QUIET_ENVIRONMENT, simplices=SimplexSettings(points=16))
    # off again: the tables are the plain ones
    assert run_evaluation(cfg, tmp_path, env=QUIET_ENVIRONMENT) == plain


def test_eval_flags_are_checked_before_any_work(tmp_path, capsys):
    base = ["eval", "--data", "fashion-mnist-sample", "--device", "cpu"]
    for flags, message in (
        (["--simplex-points", "1"], "--simplex-points must be an integer in [2, 1,000,000], got 1"),
        (["--simplex-subsets", "3"], "--simplex-points must be an integer in [2, 1,000,000], got 0"),
        (["--simplex-points", "8", "--rounds", "1"], "need --rounds >= 2"),
    ):
        assert cli_exit_code(base + flags + ["--out", str(tmp_path / "out")]) == 1
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err, err
        assert not (tmp_path / "out" / "results").exists()


def test_leaderboard_columns_per_k_rank_and_compare_draws_them(tmp_path):
    out = tmp_path / "board"
    # a 6-point triangle grid (the default's 66 were most of this test's time): the simplex columns do not use
    # it, and the triangle columns are compared only between the two boards
    base = EvalConfig(rounds=3, iterations=4, chunk_size=8, num_samples=10, min_confidence=0.6, triangle_n=2)
    small = dict(base=base, env=QUIET_ENVIRONMENT)
    plain = run_leaderboard(["cnn", "cnn-robust"], "fashion-mnist-sample", out, ranking=Ranking(resamples=200), **small)
    assert not any(c.startswith("simplex_k") for c in plain["columns"])
    with pytest.raises(ValueError, match="needs --simplex-points"):
        run_leaderboard(["cnn", "cnn-robust"], "fashion-mnist-sample", out, ranking=Ranking("simplex_k2", 200), **small)

    settings = SimplexSettings(points=16)
    board = run_leaderboard(
        ["cnn", "cnn-robust"],
        "fashion-mnist-sample",
        out,
        ranking=Ranking("simplex_k3", 200),
        simplices=settings,
        **small,
    )
    assert [c for c in board["columns"] if c.startswith("simplex_k")] == ["simplex_k2", "simplex_k3"]
    assert board["rank_by"] == "simplex_k3" and board["higher_first"]["simplex_k3"] is True
    for row in board["rows"]:
        cell = row["values"]["simplex_k2"]
        assert 0 <= cell["low"] <= cell["mean"] <= cell["high"] <= 1, cell
        # the column is the per-source fraction above p_src - 0.2 of the model's own tables, averaged
        tables = json.loads((out / row["model"] / "tables.json").read_text())
        assert cell["mean"] == pytest.approx(tables["simplices"]["rows"][0]["frac_above_0.2"][0])
        # every other column is the plain leaderboard's
        old = next(r for r in plain["rows"] if r["model"] == row["model"])
        assert {k: v for k, v in row["values"].items() if k in old["values"]} == old["values"]
    md = (out / "leaderboard.md").read_text()
    assert "k=2 > p_src - 0.2" in md and "k=K columns: the fraction of the K-simplex" in md
    assert "simplex_k3_mean" in (out / "leaderboard.csv").read_text().splitlines()[0]
    json.loads((out / "leaderboard.json").read_text(), parse_constant=lambda c: pytest.fail(f"JSON holds {c}"))

    written = write_comparison([str(out / "cnn"), str(out / "cnn-robust")], tmp_path / "cmp")
    assert tmp_path / "cmp" / "simplex_fractions.png" in written
    assert "k-simplex fraction against k" in (tmp_path / "cmp" / "compare.md").read_text()
    plain = dataclasses.replace(load_finished(out / "cnn"), tables={})
    assert fraction_by_k_figure([plain], ["plain"], tmp_path / "none.png") is None  # no k-simplices
    assert not (tmp_path / "none.png").exists()
