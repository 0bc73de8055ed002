"""Each image decoded once per command (lst_fast.data.decoded): a leaderboard of 3 models with two
preprocessings opens its data set once, decodes each image at most once per preprocessing and computes the
pool's pixel digest once; over the memory budget it warns and decodes again, with the same tables. And
every command ends with its stage times (lst_fast.stage_times); the leaderboard shows what each model cost."""

from __future__ import annotations

import collections
import csv
import io
import json
import sys
from pathlib import Path

import pytest
import torch

from lst_fast.cli import main
from lst_fast.data import sources
from lst_fast.data.decoded import BUDGET_VARIABLE, decoded_once
from lst_fast.evaluation import pool as pool_module
from lst_fast.stage_times import stage, stage_clock, timed_stage

sys.path.insert(0, str(Path(__file__).parent / "standins"))
from colour_models import colour_images  # noqa: E402

MODELS = Path(__file__).parent / "standins" / "colour_models.py"
# Three models, two preprocessings (24 and 32 px): the first two read the same view of the data.
SPECS = [f"py:{MODELS}:build(size=24)", f"py:{MODELS}:build(size=24, sharpness=12.0)", f"py:{MODELS}:build(size=32)"]


@pytest.fixture(scope="module")
def jpeg_folder(tmp_path_factory) -> Path:
    return colour_images(tmp_path_factory.mktemp("colours"), 30, 48, 36)


def _leaderboard(folder: Path, out: Path, *extra: str) -> int:
    models = [a for spec in SPECS for a in ("--model", spec)]
    return main(
        ["leaderboard", *models, "--data", f"imagefolder:{folder}", "--num-samples", "12", "--rounds", "2"]
        + ["--iterations", "2", "--resamples", "20", "--workers", "0", "--no-progress", "--out", str(out), *extra]
    )


class Counts:
    """Opens (file listings), decodes per file, and pixel digests, counted where they happen."""

    def __init__(self, monkeypatch) -> None:
        from PIL import Image

        self.opens, self.digests, self.decodes = 0, 0, collections.Counter()
        folder, hash_images, image_open = sources._image_folder, pool_module._hash_images, Image.open

        def counted_folder(*args, **kwargs):
            self.opens += 1
            return folder(*args, **kwargs)

        def counted_hash(data, indices, batch):
            self.digests += len(indices) > 0  # the digest of no images (a data set's identity) costs nothing
            return hash_images(data, indices, batch)

        def counted_open(path, *args, **kwargs):
            self.decodes[str(path)] += 1
            return image_open(path, *args, **kwargs)

        monkeypatch.setattr(sources, "_image_folder", counted_folder)
        monkeypatch.setattr(pool_module, "_hash_images", counted_hash)
        monkeypatch.setattr(Image, "open", counted_open)


def _main_table(out: Path) -> str:
    return (out / "leaderboard.md").read_text().partition("## What each model cost")[0]


def test_a_leaderboard_decodes_each_image_once_per_preprocessing(jpeg_folder, tmp_path, monkeypatch, capsys):
    counts = Counts(monkeypatch)
    with decoded_once() as scope:
        assert _leaderboard(jpeg_folder, tmp_path / "once") == 0
    assert counts.opens == 1 and scope.counts.opens == 1  # one listing of the folder for the whole command
    assert counts.digests == 1 and scope.counts.digests == 1  # the pool's pixel digest, computed once
    pool = json.loads((tmp_path / "once" / "pool.json").read_text())
    files = sorted(str(p) for p in jpeg_folder.rglob("*.jpg"))
    pool_files = [files[i] for i in pool["indices"]]
    assert len(pool_files) == 12
    assert all(counts.decodes[f] == 2 for f in pool_files)  # once in each of the two preprocessings
    assert max(counts.decodes.values()) == 2 and scope.counts.most_decodes() == 1
    out = capsys.readouterr().out
    stages = [line.split()[1] for line in out.splitlines() if line.startswith("time ")]
    assert stages[-2:] == ["other", "total"] and {"pool", "scan", "walks", "triangles", "tables"} <= set(stages)

    # Over the memory budget: one warning, images decoded at each read, the same tables.
    counts.decodes.clear()
    monkeypatch.setenv(BUDGET_VARIABLE, "0")
    with pytest.warns(RuntimeWarning, match=f"memory budget of 0 GiB \\({BUDGET_VARIABLE}\\)"):
        assert _leaderboard(jpeg_folder, tmp_path / "budget") == 0
    assert max(counts.decodes[f] for f in pool_files) > 2
    assert _main_table(tmp_path / "budget") == _main_table(tmp_path / "once").replace(
        str(tmp_path / "once"), str(tmp_path / "budget")
    )
    _shows_what_each_model_cost(tmp_path / "once")


def test_a_bad_budget_is_one_line(jpeg_folder, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv(BUDGET_VARIABLE, "lots")
    assert _leaderboard(jpeg_folder, tmp_path / "bad") == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"{BUDGET_VARIABLE} must be a number of GiB >= 0, got 'lots'" in err[0]


def test_stages_count_their_own_time_and_nothing_outside_a_clock():
    @timed_stage("outer")
    def outer() -> int:
        with stage("inner"):
            sum(range(20000))
        return 7

    assert outer() == 7  # no clock: the function just runs
    with stage_clock() as clock:
        assert outer() == 7
        with stage_clock() as same:  # a command inside a command shares its clock
            assert same is clock
    assert list(clock.seconds) == ["outer", "inner"]
    assert all(s >= 0 for s in clock.seconds.values()) and sum(clock.seconds.values()) <= clock.total()
    lines = clock.lines()
    assert [line.split()[1] for line in lines] == ["outer", "inner", "other", "total"]


def test_a_decoded_view_serves_copies_and_keeps_uint8_where_exact(jpeg_folder):
    from lst_fast.data.decoded import DecodedImageSet
    from lst_fast.data.preprocessing import Preprocessing

    plain = sources.open_image_set(f"imagefolder:{jpeg_folder}", preprocessing=Preprocessing((3, 16, 16)))
    with decoded_once() as scope:
        view = sources.open_image_set(f"imagefolder:{jpeg_folder}", preprocessing=Preprocessing((3, 16, 16)))
        other = sources.open_image_set(f"imagefolder:{jpeg_folder}", preprocessing=Preprocessing((3, 20, 20)))
        assert isinstance(view, DecodedImageSet) and other is not view and scope.counts.opens == 1
        index = torch.tensor([3, 1, 3])
        first = view.get(index)
        assert torch.equal(first, plain.get(index)) and torch.equal(view.get(index), first)
        first.fill_(0.5)  # a caller changing what it got does not change the copy
        assert torch.equal(view.get(index), plain.get(index))
        assert view.slab is not None and view.slab.dtype == torch.uint8 and not view.floats  # exact: 1 byte a value
        assert scope.counts.decodes[(view.key, 3)] == 1 and other.get(index).shape[-1] == 20


def _shows_what_each_model_cost(out: Path) -> None:
    board = json.loads((out / "leaderboard.json").read_text())
    for row in board["rows"]:
        cost = row["cost"]
        assert cost["walks"] == 2 * row["sources"] and cost["seconds"] > 0 and cost["img_iter_per_s"] > 0
        assert "threads" in cost["device"]  # the CPU in words
    markdown = (out / "leaderboard.md").read_text()
    table, _, section = markdown.partition("## What each model cost")
    section = section.split("\n## ", 1)[0]  # the sections after it (the verdicts) have rows of their own
    assert "img-iter/s" not in table and section.count("| `py:") == 3  # its own table: the ranked one unchanged
    rows = list(csv.DictReader(io.StringIO((out / "leaderboard.csv").read_text())))
    assert [float(r["img_iter_per_s"]) > 0 for r in rows] == [True] * 3
    assert "img-iter/s" in (out / "leaderboard.tex").read_text()
    # a folder of an earlier lst_fast (no cost record) says n/a, and the leaderboard is still written
    from lst_fast.evaluation.leaderboard import Ranking, model_folder, write_leaderboard

    for path in (out).glob("*/walk_cost*.json"):
        path.unlink()
    rewritten = write_leaderboard(out, SPECS, Ranking(resamples=20))
    assert all(row["cost"] is None for row in rewritten["rows"])
    assert "| n/a | n/a | n/a | n/a |" in (out / "leaderboard.md").read_text()
    assert model_folder(SPECS[0]) in {Path(r["folder"]).name for r in rewritten["rows"]}


def test_images_that_are_not_whole_levels_are_held_as_they_are():
    from lst_fast.data.decoded import DecodedImageSet, DecodeScope
    from lst_fast.data.image_set import ImageSet

    images = torch.rand(6, 3, 5, 5, generator=torch.Generator().manual_seed(0))
    images[1] = torch.round(images[1] * 255) / 255.0  # this one is whole levels: held as uint8
    calls = []

    def fetch(index):
        calls.append(index.tolist())
        return images[index].clone()

    view = DecodedImageSet(ImageSet(torch.zeros(6, dtype=torch.long), fetch, "floats"), DecodeScope(), "floats")
    index = torch.tensor([2, 1, 4, 2])
    assert torch.equal(view.get(index), images[index]) and torch.equal(view.get(index), images[index])
    assert calls == [[2, 1, 4]] and set(view.floats) == {2, 4} and view.slot == {1: 0}
