"""Every model's verdict on every model's LST outputs (lst_fast.evaluation.verdicts), checked against known
answers: the diagonal is "still source", two copies of a model agree everywhere, a model with permuted classes
gives the permuted counts, a planted difference is told apart; and the files resume, the leaderboard, the site
and `compare` show the matrix (a tiny leaderboard of the two shipped CNNs on the shipped sample)."""

from __future__ import annotations

import json
import shutil
import warnings

import pytest
import torch
from safetensors.torch import load_file, save_file

from lst_fast.evaluation import EvalConfig
from lst_fast.evaluation.leaderboard import Ranking, resample_counts, run_leaderboard, write_leaderboard
from lst_fast.evaluation.pool import load_pool
from lst_fast.evaluation.verdict_tables import verdict_caption
from lst_fast.evaluation.verdicts import judge_outputs, verdict_matrix
from lst_fast.models import resolve_model
from lst_fast.run_environment import QUIET_ENVIRONMENT
from conftest import cli_exit_code

MODELS = ["cnn", "cnn-robust"]
# a 6-point triangle grid (the default's 66 were most of the board's cost): no verdict depends on a triangle
BASE = EvalConfig(rounds=2, iterations=3, chunk_size=8, num_samples=10, min_confidence=0.6, triangle_n=2)
RESAMPLES = 100


@pytest.fixture(scope="module")
def board(tmp_path_factory):
    out = tmp_path_factory.mktemp("verdicts") / "board"
    found = run_leaderboard(
        MODELS, "fashion-mnist-sample", out, base=BASE, ranking=Ranking(resamples=RESAMPLES), env=QUIET_ENVIRONMENT
    )
    return out, found


def _labels(out):
    pool = load_pool(out / "pool.json")
    labels = torch.full((pool.data["size"],), -1, dtype=torch.long)
    labels[pool.indices] = pool.labels
    return pool, labels


class PermutedClasses(torch.nn.Module):
    """The model's class k is this one's class perm[k]."""

    def __init__(self, net, perm):
        super().__init__()
        self.net, self.inverse = net, torch.argsort(perm)

    def forward(self, x):
        return self.net(x)[:, self.inverse]


def test_the_diagonal_is_still_source_and_every_format_has_the_matrix(board):
    out, found = board
    matrix = found["verdicts"]
    assert matrix["models"] == [r["model"] for r in found["rows"]]
    for k, row in enumerate(found["rows"]):
        # the same per-source values under the same resamples: the same mean and interval, to the bit
        cell = matrix["cells"]["source"][k][k]
        assert {p: cell[p] for p in ("mean", "low", "high")} == row["values"]["still_source"]
        own = load_file(out / "verdicts" / row["model"] / f"{row['model']}.safetensors")
        chunks = [load_file(p) for p in sorted((out / row["model"] / "results").glob("round*_chunk*"))]
        _, labels = _labels(out)
        still = torch.cat([c["still_source"] for c in chunks]).bool()
        assert torch.equal((own["predicted"] == labels[own["source"]]).flatten(), still)  # per output
        shares = sum(matrix["cells"][s][k][k]["mean"] for s in ("source", "target", "other"))
        assert shares == pytest.approx(1.0)
    md, tex = (out / "leaderboard.md").read_text(), (out / "leaderboard.tex").read_text()
    assert "Whose blind spot" in md and "| `cnn-robust` |" in md.split("Whose blind spot")[-1]
    assert r"verdict of & \texttt{cnn" in tex
    csv_lines = (out / "leaderboard_verdicts.csv").read_text().splitlines()
    assert csv_lines[0].startswith("outputs_of,verdict_of,statistic,sources,mean,low,high,difference_mean")
    assert len(csv_lines) == 1 + 4 * len(MODELS) ** 2
    assert json.loads((out / "leaderboard.json").read_text())["verdicts"]["shared"] == [[10, 10], [10, 10]]
    assert (out / "leaderboard_verdicts.png").stat().st_size > 0


def test_copies_agree_everywhere_and_permuted_classes_give_the_permuted_counts(board, tmp_path):
    out, _ = board
    pool, labels = _labels(out)
    own = load_file(out / "verdicts" / "cnn" / "cnn.safetensors")
    assert bool((own["predicted"] == labels[own["source"]]).all())  # the cnn still says the source everywhere
    cnn = resolve_model("cnn")
    copy, _ = judge_outputs(out / "cnn", {"model": "copy"}, lambda: resolve_model("cnn"), tmp_path / "c.st", labels)
    assert torch.equal(copy["predicted"], own["predicted"])
    perm = (torch.arange(10) + 1) % 10  # no class keeps its name
    permuted = cnn.replace(spec="permuted", module=PermutedClasses(cnn.module, perm))
    flipped, _ = judge_outputs(out / "cnn", {"model": "permuted"}, lambda: permuted, tmp_path / "p.st", labels)
    assert torch.equal(flipped["predicted"], perm[own["predicted"]])
    counts, permuted_counts = (
        torch.bincount(own["predicted"].flatten(), minlength=10),
        torch.bincount(flipped["predicted"].flatten(), minlength=10),
    )
    assert torch.equal(permuted_counts[perm], counts)
    weights = resample_counts(len(pool), RESAMPLES, pool.seed)
    twins = {(a, b): own for a in ("cnn", "copy") for b in ("cnn", "copy")}
    same = verdict_matrix(twins, ["cnn", "copy"], pool.indices, labels, weights)
    for row in same["cells"]["source"]:
        for cell in row:
            assert cell["mean"] == cell["low"] == cell["high"] == 1.0
            assert cell["difference"]["low"] <= 0.0 <= cell["difference"]["high"]  # identical: includes zero
    planted = verdict_matrix(
        {("cnn", "cnn"): own, ("cnn", "permuted"): flipped}, ["cnn", "permuted"], pool.indices, labels, weights
    )
    says_target = (perm[own["predicted"]] == labels[own["target"]]).double().mean()
    assert planted["cells"]["source"][0][1]["mean"] == 0.0
    assert planted["cells"]["target"][0][1]["mean"] == pytest.approx(float(says_target), abs=1e-12)
    assert planted["cells"]["source"][0][1]["difference"]["high"] < 0  # a planted difference excludes zero
    assert planted["cells"]["source"][1][1]["mean"] != planted["cells"]["source"][1][1]["mean"]  # no outputs: n/a


def test_a_model_with_part_of_the_pool_is_judged_on_the_sources_both_have():
    labels = torch.tensor([0, 1, 2, 0, 1, 2])
    positions = torch.arange(6)
    a_sources, b_sources = torch.tensor([0, 1, 2, 3]), torch.tensor([2, 3])
    targets_a, targets_b = torch.tensor([[1, 2, 0, 4]]), torch.tensor([[0, 4]])

    def verdict(sources, targets, predicted):
        shape = targets.shape
        return {
            "source": sources,
            "target": targets,
            "predicted": predicted.reshape(shape),
            "source_p": torch.full(shape, 0.5, dtype=torch.float64),
        }

    found = {
        ("A", "A"): verdict(a_sources, targets_a, labels[a_sources]),
        ("A", "B"): verdict(a_sources, targets_a, labels[targets_a[0]]),  # B sees every target ...
        ("B", "B"): verdict(b_sources, targets_b, labels[b_sources]),
        ("B", "A"): verdict(b_sources, targets_b, labels[b_sources]),
    }
    matrix = verdict_matrix(found, ["A", "B"], positions, labels, resample_counts(6, 50, 0))
    assert matrix["sources"] == [4, 2] and matrix["shared"] == [[4, 2], [2, 2]]
    assert matrix["cells"]["target"][0][1]["mean"] == 1.0  # ... over the 2 sources B has, not A's 4
    assert matrix["cells"]["source"][0][1]["difference"]["mean"] == -1.0
    assert "`A` by `B` 2 of 4" in verdict_caption(matrix)


def test_verdict_files_resume_and_are_vetted_before_reuse(board):
    out, found = board
    files = sorted((out / "verdicts").rglob("*.safetensors"))
    assert len(files) == len(MODELS) ** 2
    before = {p: p.stat().st_mtime_ns for p in files}
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing stale, nothing recomputed
        again = write_leaderboard(out, MODELS, Ranking(resamples=RESAMPLES))
    assert {p: p.stat().st_mtime_ns for p in files} == before
    assert again["verdicts"] == found["verdicts"]
    broken = out / "verdicts" / "cnn" / "cnn-robust.safetensors"
    stale = out / "verdicts" / "cnn-robust" / "cnn.safetensors"
    broken.write_bytes(broken.read_bytes()[:100])
    tensors = load_file(stale)
    tensors["predicted"] = torch.zeros_like(tensors["predicted"])
    save_file(tensors, stale, metadata={"lst_fast": json.dumps({"format": "lst-fast verdicts 1", "judge": {}})})
    with pytest.warns(RuntimeWarning) as caught:
        redone = write_leaderboard(out, MODELS, Ranking(resamples=RESAMPLES))
    text = " ".join(str(w.message) for w in caught)
    assert "cannot be read" in text and "other inputs" in text
    assert redone["verdicts"] == found["verdicts"]
    assert {p for p in files if p.stat().st_mtime_ns != before[p]} == {broken, stale}


def test_the_site_shows_every_models_verdict_under_each_output(board, tmp_path):
    from lst_fast.website.build import SiteOptions, build_site

    out, _ = board
    build_site([str(out)], tmp_path / "site", SiteOptions(walk_pages=0), env=QUIET_ENVIRONMENT)
    side = (tmp_path / "site" / "side-by-side.html").read_text()
    assert side.count('<ul class="verdicts"') == len(MODELS) and "<li>cnn-robust: " in side
    pairs = json.loads((tmp_path / "site" / "pairs.js").read_text().split("=", 1)[1].rstrip().rstrip(";"))
    verdicts = pairs["pairs"][0][6][0][2]  # the first pair, cnn's output: every model's [class, confidence]
    assert len(verdicts) == len(MODELS) and verdicts[0][0] == pairs["pairs"][0][4]
    page = (tmp_path / "site" / "models" / "cnn" / "index.html").read_text()
    assert "Whose blind spot?" in page and "cnn on the outputs of (column)" in page


def test_compare_prints_the_matrix_of_paired_runs_and_says_why_not_for_unpaired(board, tmp_path, capsys):
    out, _ = board
    runs = [str(out / m) for m in MODELS]
    assert cli_exit_code(["compare", *runs, "--out", str(tmp_path / "paired"), "--device", "cpu"]) == 0
    printed = capsys.readouterr().out
    assert "Whose blind spot" in printed and "| `cnn-robust` |" in printed.split("Whose blind spot")[-1]
    assert json.loads((tmp_path / "paired" / "verdicts.json").read_text())["shared"] == [[10, 10], [10, 10]]
    other = tmp_path / "other"
    shutil.copytree(out / "cnn-robust", other)
    chunk = other / "results" / "round01_chunk00000.safetensors"
    from safetensors import safe_open

    with safe_open(str(chunk), "pt") as f:
        metadata = f.metadata()
    tensors = load_file(chunk)
    tensors["target"] = tensors["target"].roll(1)  # other targets: no longer paired
    save_file(tensors, chunk, metadata=metadata)
    assert cli_exit_code(["compare", runs[0], str(other), "--out", str(tmp_path / "unpaired"), "--device", "cpu"]) == 0
    printed = capsys.readouterr().out
    assert "No verdict matrix" in printed and "unpaired" in printed and "other targets" in printed
    assert not (tmp_path / "unpaired" / "verdicts.md").exists()
