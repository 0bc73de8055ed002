"""Every command's output is every other command's input: `site`, `report` and `compare` on the folders that
`eval` and `leaderboard` can write (with k-simplices, with one round, with a model with no sources, with NaN
outputs, killed halfway, truncated, with a model removed) either work or answer in one line with exit code
1. Reading a folder never imports a py: model it names unless the user passes --trust-folder-code, and the
site never writes into a folder it did not make. Two tiny leaderboards are built once for the module; each
case copies a folder and breaks the copy."""

from __future__ import annotations

import json
import shutil
import textwrap
from pathlib import Path

import pytest
from PIL import Image
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from lst_fast.evaluation.pool import build_pool
from lst_fast.run_environment import QUIET_ENVIRONMENT
from conftest import cli_exit_code

DATA = "fashion-mnist-sample"
# chunks of 2: a report draws and probes the first chunk's pairs (its width figure: 64 directions x 6 radii each)
# --triangle-n 3: 10 points a triangle (not 66), of which the NaN test below blanks 5
FAST = ["--iterations", "2", "--chunk-size", "2", "--num-samples", "6", "--resamples", "20", "--triangle-n", "3"]
FAST += ["--no-progress"]
READERS = ("site", "report", "compare")

BLIND = """
import torch


class Blind(torch.nn.Module):
    def forward(self, x):
        return torch.zeros(x.shape[0], 10, device=x.device)  # every class 0.1: never above the pool's 0.6


def build():
    return Blind()
"""

# A factory that leaves a mark when it runs and returns the shipped CNN (so its walks rerun bit for bit).
MARKING_FACTORY = """
from pathlib import Path

from lst_fast.models import load_model

MARK = Path(__file__).with_name("factory_ran")


def build():
    MARK.touch()
    net = load_model("cnn")
    net.lst_input_size = (1, 28, 28)
    return net
"""


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    """simplex/: a leaderboard of cnn with k-simplices (3 rounds: k = 2 and 3; the leaderboard's default of 5
    cost 10 triangle pairs); one/: a leaderboard of one round ranked by confidence, of cnn and a py: model
    added later that classifies none of the pool (no sources)."""
    root = tmp_path_factory.mktemp("folders")
    board = ["leaderboard", "--data", DATA, *FAST]
    simplex = ["--out", str(root / "simplex"), "--rounds", "3", "--simplex-points", "4", "--model", "cnn"]
    assert cli_exit_code([*board, *simplex]) == 0
    # the pool of cnn alone, as the leaderboard builds it (no ranking of cnn alone written first): the py:
    # model is then added to it, as to a leaderboard of cnn that ran before
    pool, _ = build_pool(["cnn"], DATA, 6, 0.6, rounds=1, env=QUIET_ENVIRONMENT)
    (root / "one").mkdir()
    pool.save(root / "one" / "pool.json")
    one = [*board, "--out", str(root / "one"), "--rounds", "1", "--rank-by", "confidence", "--model", "cnn"]
    (root / "blind.py").write_text(textwrap.dedent(BLIND))
    assert cli_exit_code([*one, f"py:{root / 'blind.py'}:build"]) == 0
    board_json = json.loads((root / "one" / "leaderboard.json").read_text())
    assert [row["sources"] for row in board_json["rows"]] == [6, 0]
    return root


def _copy(folder: Path, tmp_path: Path, name: str = "copy") -> Path:
    return Path(shutil.copytree(folder, tmp_path / name))


def _run(capsys, argv) -> tuple:
    """(exit code, stderr) of `lst-fast argv`, checking that a failure is one line naming no internal error."""
    code = cli_exit_code(argv)
    captured = capsys.readouterr()
    assert code in (0, 1), (argv, code, captured.err)
    if code == 1:
        assert captured.err.count("\n") == 1 and "internal error" not in captured.err, captured.err
    return code, captured.err


def _read(capsys, reader: str, folder: Path, out: Path, *extra: str) -> tuple:
    """(exit code, stderr) of one reader on `folder`; site and compare write into `out` (report into the
    folder itself)."""
    if reader == "site":
        argv = ["site", str(folder), "--out", str(out), "--walk-pages", "1", "--no-progress", *extra]
    elif reader == "report":
        argv = ["report", str(folder), *extra]
    else:
        argv = ["compare", str(folder), "--out", str(out)]
    return _run(capsys, argv)


def _edit_triangles(folder: Path, edit) -> None:
    """Apply `edit` to every triangle file's confidences, keeping each file's record."""
    for path in (folder / "results").glob("triangles_*.safetensors"):
        with safe_open(str(path), "pt") as f:
            metadata = f.metadata()
        tensors = load_file(str(path))
        edit(tensors["confidence"])
        save_file(tensors, str(path), metadata)


def _rewrite_config(folder: Path, **changes: str) -> None:
    """Make `folder` an evaluation with `changes` to its configuration (the model, the data): config.json
    and every result file's record, as if that evaluation had written them."""
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, **changes}))
    for path in (folder / "results").glob("*.safetensors"):
        with safe_open(str(path), "pt") as f:
            metadata = dict(f.metadata() or {})
        record = json.loads(metadata["lst_fast"])
        record["config"].update(changes)
        metadata["lst_fast"] = json.dumps(record)
        save_file(load_file(str(path)), str(path), metadata)


# -- the folders as written ----------------------------------------------------------------------------


def test_a_leaderboard_with_k_simplices_has_a_site_and_its_model_a_report_and_a_comparison(folders, tmp_path, capsys):
    assert _read(capsys, "site", folders / "simplex", tmp_path / "site")[0] == 0
    index = (tmp_path / "site" / "index.html").read_text()
    assert "k=2" in index and 'href="models/cnn/index.html"' in index
    assert _read(capsys, "report", _copy(folders / "simplex" / "cnn", tmp_path), tmp_path)[0] == 0
    assert _read(capsys, "compare", folders / "simplex" / "cnn", tmp_path / "compare")[0] == 0


def test_one_round_and_a_model_with_no_sources_build_a_site_with_no_walks_for_that_model(folders, tmp_path, capsys):
    site = tmp_path / "site"
    assert _read(capsys, "site", folders / "one", site)[0] == 0
    index = (site / "index.html").read_text()
    assert "no walks" in index and "classifies 0" in index and "n/a" in index  # Table 2 with one round: n/a
    assert not list((site / "models").glob("py_*"))  # the model with no sources has no page
    assert _read(capsys, "report", _copy(folders / "one" / "cnn", tmp_path), tmp_path)[0] == 0
    assert "report_triangles.png" not in (tmp_path / "copy" / "report.md").read_text()  # one round: no triangle
    assert _read(capsys, "compare", folders / "one" / "cnn", tmp_path / "compare")[0] == 0
    blind = next((folders / "one").glob("py_*"))
    for reader in READERS:  # its folder holds no evaluation: one line
        assert _read(capsys, reader, blind, tmp_path / f"{reader}-blind")[0] == 1


# -- broken folders ----------------------------------------------------------------------------------------


def test_nan_confidences_build_a_site_a_report_and_a_comparison(folders, tmp_path, capsys):
    run = _copy(folders / "simplex" / "cnn", tmp_path)
    _edit_triangles(run, lambda c: c[:, :5].fill_(float("nan")))  # every source: a model that gave no number
    assert _read(capsys, "site", run, tmp_path / "site")[0] == 0
    page = next((tmp_path / "site" / "models" / "cnn" / "walks").glob("*.html")).read_text()
    assert 'fill="#bbbbbb"' in page  # the NaN cells of its triangle map: grey
    assert _read(capsys, "report", run, tmp_path)[0] == 0
    assert (run / "report_triangles.png").is_file()
    assert _read(capsys, "compare", run, tmp_path / "compare")[0] == 0


@pytest.mark.parametrize(
    "damage",
    ["no tables.json", "a chunk missing", "tables.json truncated", "a chunk truncated", "tables.json not tables"],
)
def test_an_evaluation_killed_halfway_or_truncated_is_one_line_for_every_reader(folders, tmp_path, capsys, damage):
    run = _copy(folders / "simplex" / "cnn", tmp_path)
    chunk = run / "results" / "round01_chunk00001.safetensors"
    if damage == "no tables.json":
        (run / "tables.json").unlink()
    elif damage == "a chunk missing":
        chunk.unlink()
    elif damage == "tables.json truncated":
        text = (run / "tables.json").read_text()
        (run / "tables.json").write_text(text[: len(text) // 2])
    elif damage == "a chunk truncated":
        first = run / "results" / "round00_chunk00000.safetensors"  # the one every reader reads
        first.write_bytes(first.read_bytes()[:200])
    else:
        (run / "tables.json").write_text(json.dumps({"sources": "six"}))
    for reader in READERS:
        code, err = _read(capsys, reader, run, tmp_path / reader)
        assert code == 1 and str(run) in err, (reader, err)


def test_a_chunk_file_moved_to_another_position_is_refused_by_compare_and_site(folders, tmp_path, capsys):
    """compare and the site read a folder through one loader (lst_fast.evaluation.finished), which vets every
    chunk file as the store does before reuse: a file whose record names another round is named, not read."""
    run = _copy(folders / "simplex" / "cnn", tmp_path)
    results = run / "results"
    shutil.copy(results / "round01_chunk00000.safetensors", results / "round00_chunk00000.safetensors")
    for reader in ("compare", "site"):
        code, err = _read(capsys, reader, run, tmp_path / reader)
        assert code == 1 and "round00_chunk00000.safetensors" in err, (reader, err)


@pytest.mark.parametrize("damage", ["leaderboard.json truncated", "leaderboard.json edited", "not finished", "removed"])
def test_a_broken_leaderboard_is_one_line_for_the_site(folders, tmp_path, capsys, damage):
    board = _copy(folders / "simplex", tmp_path)
    path = board / "leaderboard.json"
    if damage == "leaderboard.json truncated":
        path.write_text(path.read_text()[:300])
    elif damage == "leaderboard.json edited":
        found = json.loads(path.read_text())
        del found["rows"][0]["values"]["rms"]
        path.write_text(json.dumps(found))
    elif damage == "not finished":  # killed before its ranking: pool.json and the model's folder, no board
        path.unlink()
    else:  # a model's folder deleted after the ranking
        shutil.rmtree(board / "cnn")
    code, err = _read(capsys, "site", board, tmp_path / "site")
    said = {"removed": "is missing", "not finished": "unfinished leaderboard"}.get(damage, "leaderboard.json")
    assert code == 1 and said in err and not (tmp_path / "site").exists(), err  # refused before writing


# -- no code from a folder -----------------------------------------------------------------------------------


def test_no_reader_runs_a_py_model_that_a_folder_names(folders, tmp_path, capsys):
    mark = tmp_path / "X"
    run = _copy(folders / "simplex" / "cnn", tmp_path)
    _rewrite_config(run, model=f"py:subprocess:run(args=['touch', '{mark}'])")
    assert _read(capsys, "site", run, tmp_path / "site")[0] == 0
    page = next((tmp_path / "site" / "models").glob("*/index.html")).read_text()
    assert "--trust-folder-code" in page and not list((tmp_path / "site" / "models").glob("*/walks/*.html"))
    assert _read(capsys, "report", run, tmp_path)[0] == 0
    report = (run / "report.md").read_text()
    assert "--trust-folder-code" in report and "report_width.png" not in report and "report_pairs.png" in report
    assert _read(capsys, "compare", run, tmp_path / "compare")[0] == 0
    # On image files the model decides the resize and crop: without it, one line naming the flag.
    for name in ("a", "b"):
        (tmp_path / "images" / name).mkdir(parents=True)
        Image.new("L", (28, 28)).save(tmp_path / "images" / name / "0.png")
    _rewrite_config(run, data=f"imagefolder:{tmp_path / 'images'}")
    for reader in ("site", "report"):
        code, err = _read(capsys, reader, run, tmp_path / f"{reader}-images")
        assert code == 1 and "--trust-folder-code" in err and not (tmp_path / f"{reader}-images").exists()
    assert not mark.exists()  # no reader ran the folder's code


def test_trust_folder_code_loads_the_py_model_for_site_and_report(folders, tmp_path, capsys):
    (tmp_path / "factory.py").write_text(textwrap.dedent(MARKING_FACTORY))
    run = _copy(folders / "simplex" / "cnn", tmp_path, "run")
    _rewrite_config(run, model=f"py:{tmp_path / 'factory.py'}:build")
    mark = tmp_path / "factory_ran"
    site = tmp_path / "site"
    assert _read(capsys, "site", run, site)[0] == 0 and not mark.exists()
    assert _read(capsys, "site", run, site, "--trust-folder-code")[0] == 0 and mark.exists()  # the same site, rebuilt
    assert len(list(site.glob("models/*/walks/*.html"))) == 1
    cached = load_file(str(next(p for p in (site / "cache").iterdir() if not p.stem.endswith("-targets"))))
    assert bool(cached["exact"].all())  # the trusted model reran the stored walk bit for bit
    mark.unlink()
    assert _read(capsys, "report", run, tmp_path, "--trust-folder-code")[0] == 0 and mark.exists()
    assert "report_width.png" in (run / "report.md").read_text()


# -- the site's own folder -----------------------------------------------------------------------------------


def test_the_site_never_writes_into_a_folder_it_did_not_make(folders, tmp_path, capsys):
    other = _copy(folders / "one", tmp_path, "other")
    figure = (other / "leaderboard.png").read_bytes()
    before = sorted(p.name for p in other.iterdir())
    code, err = _run(capsys, ["site", str(folders / "simplex"), "--out", str(other), "--no-progress"])
    assert code == 1 and "did not make" in err
    assert (other / "leaderboard.png").read_bytes() == figure and sorted(p.name for p in other.iterdir()) == before
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "keep.txt").write_text("mine")
    assert _run(capsys, ["site", str(folders / "simplex"), "--out", str(tmp_path / "notes"), "--no-progress"])[0] == 1
    assert sorted(p.name for p in (tmp_path / "notes").iterdir()) == ["keep.txt"]
    site = tmp_path / "site"
    argv = ["site", str(folders / "simplex"), "--out", str(site), "--walk-pages", "0", "--no-progress"]
    assert _run(capsys, argv)[0] == 0 and (site / ".lst-fast-site").is_file()
    assert _run(capsys, argv)[0] == 0  # a site it made: rebuilt
    (site / ".lst-fast-site").unlink()  # a site built before the marker: its index.html and static/site.js
    assert _run(capsys, argv)[0] == 0 and (site / ".lst-fast-site").is_file()


def test_the_leaderboards_lpips_reread_never_loads_a_model_its_folder_names(folders, tmp_path, monkeypatch):
    from lst_fast.errors import InputError
    from lst_fast.evaluation import leaderboard

    mark = tmp_path / "X"
    board = _copy(folders / "simplex", tmp_path)
    _rewrite_config(board / "cnn", model=f"py:subprocess:run(args=['touch', '{mark}'])")
    monkeypatch.setattr(leaderboard, "_lpips_available", lambda: None)  # as if lpips were installed
    with pytest.raises(InputError, match="config.json"):
        leaderboard.write_leaderboard(board, ["cnn"], leaderboard.Ranking(resamples=20))
    assert not mark.exists()
