"""`lst-fast site` on a tiny leaderboard (2 shipped models, 6 sources, 2 rounds, 4 iterations), built once
per module: the pages and files, a walk rerun to its stored output bit for bit, the cache of a rebuild,
no side-by-side page for runs that are not paired, bad input; then the site in headless Chromium (skipped,
with the reason, where Chromium or Playwright is missing; CI installs both)."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import browser_pages
import numpy
import pytest
import torch
from PIL import Image

from lst_fast.cli import main
from lst_fast.evaluation import EvalConfig, EvaluationStore, run_evaluation, run_leaderboard
from lst_fast.evaluation.leaderboard import Ranking
from lst_fast.run_environment import QUIET_ENVIRONMENT
from lst_fast.website import SiteOptions, build_site
from lst_fast.website import walk_details as details_module

# A triangle grid of 4 steps a side (15 points, not 66): no test here reads a triangle value, and a walk
# page's triangle maps still have inner points.
BASE = EvalConfig(rounds=2, iterations=4, chunk_size=4, triangle_n=4)
MODELS = ["cnn", "cnn-robust"]
WALK_PAGES = 4
# A walk page's width chart from 8 random directions instead of 64 (most of a build's time): no test here
# reads a width, and every build in this module uses the same number, so the caches and the byte-for-byte
# comparison of two builds still hold (the page's chart title says 8).
WIDTH_DIRECTIONS = 8


@pytest.fixture(scope="module", autouse=True)
def few_width_directions():
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(details_module, "WIDTH_DIRECTIONS", WIDTH_DIRECTIONS)
        yield


@pytest.fixture(scope="module")
def board(tmp_path_factory):
    out = tmp_path_factory.mktemp("board")
    pooled = BASE.replace(num_samples=6, min_confidence=0.6)
    run_leaderboard(
        MODELS, "fashion-mnist-sample", out, base=pooled, ranking=Ranking(resamples=50), env=QUIET_ENVIRONMENT
    )
    return out


@pytest.fixture(scope="module")
def site(board, tmp_path_factory, few_width_directions):
    out = tmp_path_factory.mktemp("site")
    build_site([str(board)], out, SiteOptions(walk_pages=WALK_PAGES), env=QUIET_ENVIRONMENT)
    return out


def _pages(site: Path):
    return sorted(site.rglob("*.html"))


def test_the_site_has_every_page_and_no_network_reference(site):
    assert (site / "index.html").is_file() and (site / "side-by-side.html").is_file()
    for model in MODELS:
        folder = site / "models" / model
        assert (folder / "index.html").is_file() and (folder / "walks.js").is_file()
        assert len(list((folder / "walks").glob("*.html"))) == WALK_PAGES
        walk = next((folder / "walks").glob("*.html")).read_text()
        assert f"over {WIDTH_DIRECTIONS} random directions" in walk  # the number drawn, not a fixed 64
        walks = _script_data(folder / "walks.js")[1]["walks"]
        assert len(walks) == 6 * BASE.rounds and sum(w[10] for w in walks) == WALK_PAGES
    index = (site / "index.html").read_text()
    assert all(f'href="models/{m}/index.html"' in index for m in MODELS)
    assert "leaderboard.png" in index and (site / "leaderboard.png").is_file()
    for page in _pages(site):
        text = page.read_text()
        assert not re.search(r"(src|href)=\"(https?:)?//", text), page  # nothing from the network
        for tag in re.findall(r"<img [^>]*>", text):
            assert re.search(
                r'alt="[^"]*confidence|alt="Leaderboard figure|alt="source, class|alt="target, class', tag
            ) or ('alt="' in tag and "of the" in tag), (page, tag)


def test_a_walk_page_reruns_the_stored_walk_to_its_output_bit_for_bit(site, board):
    from safetensors.torch import load_file

    for model in MODELS:
        cached = load_file(str(site / "cache" / f"{model}.safetensors"))
        assert bool(cached["exact"].all())
        pages = sorted(p.stem for p in (site / "models" / model / "walks").glob("*.html"))
        store = EvaluationStore(board / model)
        cfg = store.read_config()
        outputs = [store.read_chunk(r, c)["images"] for r in range(cfg.rounds) for c in range(store.chunks_per_round())]
        per_round = [
            torch.cat(outputs[r * store.chunks_per_round() : (r + 1) * store.chunks_per_round()])
            for r in range(cfg.rounds)
        ]
        chosen = sorted(pages, key=lambda n: tuple(int(x) for x in n.split("-")))
        for k, name in enumerate(chosen):
            r, position = (int(x) for x in name.split("-"))
            last, frames = cached["last_frame"][k], cached["frames"][k]
            assert torch.equal(last, per_round[r][position])  # the stored output, bit for bit
            assert torch.equal(frames[-1], per_round[r][position].mul(255).round().to(torch.uint8))  # its PNG
            assert not torch.equal(frames[0], frames[-1])  # and the walk did move
            png = site / "models" / model / "full" / f"f{name}-{len(frames) - 1}.png"
            assert torch.equal(torch.from_numpy(numpy.array(Image.open(png))), frames[-1][0])  # lossless
        assert cached["frame_iterations"].tolist() == [0, 1, 2, 3, 4]
    html = (site / "models" / "cnn" / "walks" / f"{chosen[0]}.html").read_text()
    assert "bit for bit" in html and 'type="range"' in html and "<svg" in html


def test_a_rebuild_reuses_the_cache_and_an_added_model_adds_only_its_part(board, tmp_path, monkeypatch):
    calls = []
    real = details_module.traverse
    monkeypatch.setattr(details_module, "traverse", lambda *a, **k: calls.append(1) or real(*a, **k))
    options = SiteOptions(walk_pages=2)
    build_site([str(board / "cnn")], tmp_path, options, env=QUIET_ENVIRONMENT)
    first = len(calls)
    assert first >= 1 and not (tmp_path / "side-by-side.html").exists()  # one run: nothing side by side
    stamps = {
        p: p.stat().st_mtime_ns
        for p in [*(tmp_path / "models" / "cnn").rglob("*.png"), *(tmp_path / "cache").iterdir()]
    }
    build_site([str(board / "cnn"), str(board / "cnn-robust")], tmp_path, options, env=QUIET_ENVIRONMENT)
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps  # cnn's images and cache untouched
    assert 1 <= len(calls) - first <= 2 and (tmp_path / "cache" / "cnn-robust.safetensors").is_file()
    assert (tmp_path / "side-by-side.html").is_file()  # the two eval folders of one pool are paired
    again = len(calls)
    build_site([str(board / "cnn"), str(board / "cnn-robust")], tmp_path, options, env=QUIET_ENVIRONMENT)
    assert len(calls) == again  # nothing rerun


def test_runs_that_are_not_paired_get_no_side_by_side_page(board, tmp_path):
    own = tmp_path / "own"
    run_evaluation(
        BASE.replace(num_samples=5, seed=3, model="cnn", data="fashion-mnist-sample"), own, env=QUIET_ENVIRONMENT
    )
    site = tmp_path / "site"
    build_site([str(board / "cnn"), str(own)], site, SiteOptions(walk_pages=1), env=QUIET_ENVIRONMENT)
    assert not (site / "side-by-side.html").exists() and not (site / "pairs.js").exists()
    index = (site / "index.html").read_text()
    assert "not paired" in index and "different source images" in index
    assert "cnn (cnn)" in index and "cnn (own)" in index  # two runs of one model, told apart by folder


def test_striking_is_the_share_of_the_way_to_the_target_times_the_confidence(board):
    from lst_fast.data.sources import open_image_set
    from lst_fast.website.inputs import load_inputs
    from lst_fast.website.walks import select_walks, walk_table

    runs, found = load_inputs([str(board)])
    assert found is not None and [r.name for r in runs] == [row["model"] for row in found["rows"]]
    data = open_image_set("fashion-mnist-sample")
    table = walk_table(runs[0], data)
    i = 7
    start = (data.get(table.source[i : i + 1]) - data.get(table.target[i : i + 1])).double().pow(2).mean().sqrt()
    expected = float(table.confidence[i]) * (1 - float(table.rms[i]) / float(start))
    assert float(table.striking[i]) == pytest.approx(expected, rel=1e-6)  # the stored RMS is float32
    chosen = select_walks(table, 4, seed=0)
    top = torch.argsort(table.striking, descending=True)[:2].tolist()
    assert set(top) <= set(chosen) and chosen == select_walks(table, 4, seed=0) != select_walks(table, 4, seed=1)
    assert select_walks(table, 100, seed=0) == list(range(len(table)))


def test_a_build_on_image_files_decodes_each_walked_image_once_and_writes_the_same_site(
    site, board, tmp_path, monkeypatch
):
    import collections

    from lst_fast.data import sources
    from lst_fast.data.image_set import ImageSet

    real, opened, decodes = sources._open, [], collections.Counter()

    def as_image_files(spec, root=None, preprocessing=None):  # every read counted, as a decode would be
        data = real(spec, root, preprocessing)
        opened.append(spec)
        fetch = lambda index: decodes.update(index.tolist()) or data.get(index)  # noqa: E731
        files = ImageSet(data.labels, fetch, data.name, data.class_names, in_memory=False)
        files.reopen = lambda other: files  # another resize and crop of the same files (the same here)
        return files

    monkeypatch.setattr(sources, "_open", as_image_files)  # what the decoding scope opens
    build_site([str(board)], tmp_path, SiteOptions(walk_pages=WALK_PAGES), env=QUIET_ENVIRONMENT)
    assert opened == ["fashion-mnist-sample"]  # both models' preprocessing is the same: one copy
    assert decodes and set(decodes.values()) == {1}  # each walked image decoded once, for both models
    files = sorted(p.relative_to(site) for p in site.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*") if p.is_file())
    for name in files:  # the site built image by image from memory, byte for byte
        assert (tmp_path / name).read_bytes() == (site / name).read_bytes(), name


def test_bad_input_is_one_line_and_exit_1(board, tmp_path, capsys):
    assert main(["site", str(tmp_path / "missing"), "--out", str(tmp_path / "s")]) == 1
    assert "is not a folder" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert main(["site", str(tmp_path / "empty"), "--out", str(tmp_path / "s")]) == 1
    assert "neither a leaderboard folder" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_:
        main(["site", str(board), "--out", str(tmp_path / "s"), "--walk-pages", "-1"])
    assert exit_.value.code == 1 and "--walk-pages" in capsys.readouterr().err
    assert main(["site", str(board), str(board / "cnn"), "--out", str(tmp_path / "s")]) == 1
    assert "give it alone" in capsys.readouterr().err
    assert main(["site", str(board), "--out", str(board)]) == 1
    assert "folder of its own" in capsys.readouterr().err
    assert not (tmp_path / "s").exists()


# -- in a real browser ------------------------------------------------------------------------------------

# CI sets LST_FAST_BROWSER_TESTS=required: there a missing browser fails the tests instead of skipping them.
REQUIRED = os.environ.get("LST_FAST_BROWSER_TESTS") == "required"
browser = pytest.mark.skipif(browser_pages.missing() is not None and not REQUIRED, reason=str(browser_pages.missing()))


@pytest.fixture(scope="module")
def chromium():
    if browser_pages.missing() is not None:
        (pytest.fail if REQUIRED else pytest.skip)(str(browser_pages.missing()))
    with browser_pages.browser() as found:
        yield found


def _load_every_image(page) -> list:
    """Every <img> made to load now (the gallery's are lazy), then the sources of those with no pixels."""
    page.evaluate("Array.from(document.images).forEach(i => { i.loading = 'eager'; })")
    page.wait_for_function("Array.from(document.images).every(i => i.complete)")
    return page.evaluate("Array.from(document.images).filter(i => !(i.naturalWidth > 0)).map(i => i.src)")


@browser
def test_every_page_loads_without_errors_with_every_image_and_every_local_link(site, tab):
    for path in _pages(site):
        watched = _opened(tab, path)
        assert _load_every_image(watched.page) == [], path
        links = watched.page.evaluate(
            "Array.from(document.querySelectorAll('a[href], img[src], script[src], link[href]'))"
            ".map(e => e.href || e.src)"
        )
        for url in links:
            assert url.startswith("file://"), (path, url)
            assert Path(url[len("file://") :].split("#")[0]).is_file(), (path, url)
        alts = watched.page.evaluate("Array.from(document.images).map(i => i.alt)")
        assert all(alts), (path, alts)
        assert watched.errors == [], (path, watched.errors)


@pytest.fixture(scope="module")
def tab(chromium):
    """One tab for the module's pages: a new tab is a new browser context, a quarter of a second each, and
    the site's pages keep no state (no storage, no cookies) that one could leave for the next."""
    watched = browser_pages.WatchedPage(chromium)
    yield watched
    watched.page.close()


def _opened(tab: browser_pages.WatchedPage, path: Path) -> browser_pages.WatchedPage:
    """`path` in the shared tab, with no errors yet: the blank page in between ends the last page's loads
    first (a load it cuts short fails as the last page's, and is cleared with its errors)."""
    tab.page.goto("about:blank")
    tab.errors.clear()
    tab.open(path)
    return tab


@browser
def test_a_header_click_reorders_the_rows(site, tab):
    watched = _opened(tab, site / "index.html")
    names = "Array.from(document.querySelectorAll('#board tbody tr')).map(r => r.cells[1].dataset.value)"
    before = watched.page.evaluate(names)
    watched.page.click("#board thead th:nth-child(2) button")
    ascending = watched.page.evaluate(names)
    watched.page.keyboard.press("Enter")  # the header is a button: the keyboard sorts too (reversed)
    descending = watched.page.evaluate(names)
    assert ascending == sorted(before) and descending == sorted(before, reverse=True) and descending != before
    assert watched.errors == []


@browser
def test_the_slider_changes_the_frame_also_from_the_keyboard(site, tab):
    walk = sorted((site / "models" / "cnn" / "walks").glob("*.html"))[0]
    watched = _opened(tab, walk)
    frame = "[document.getElementById('frame').src, document.getElementById('frame-label').textContent]"
    last = watched.page.evaluate(frame)
    watched.page.focus("#slider")
    watched.page.keyboard.press("Home")
    first = watched.page.evaluate(frame)
    # the first frame's image loaded before the next replaces it: a load cut short is a "failed" request
    watched.page.wait_for_function("document.getElementById('frame').complete")
    watched.page.keyboard.press("ArrowRight")
    second = watched.page.evaluate(frame)
    assert first[0].endswith("-0.png") and last[0].endswith("-4.png") and second[0].endswith("-1.png")
    assert "iteration 0" in first[1] and "iteration 1" in second[1]
    assert _load_every_image(watched.page) == [] and watched.errors == []


@browser
def test_the_selectors_change_the_pair_and_the_gallery_also_from_the_keyboard(site, tab):
    watched = _opened(tab, site / "side-by-side.html")
    outputs = "Array.from(document.querySelectorAll('.pair-output')).map(i => i.src + '|' + i.alt)"
    before = watched.page.evaluate(outputs)
    watched.page.focus("#pair")
    watched.page.keyboard.press("ArrowDown")
    after = watched.page.evaluate(outputs)
    assert len(after) == len(MODELS) and after != before and "o0-1." in after[0]
    watched.page.click("#pair-next")
    assert "o0-2." in watched.page.evaluate(outputs)[0]
    assert _load_every_image(watched.page) == [] and watched.errors == []

    watched.open(site / "models" / "cnn" / "index.html")
    count = "document.getElementById('count').textContent"
    assert watched.page.evaluate(count).startswith("12 of 12")
    watched.page.focus("#filter-source")
    watched.page.keyboard.press("ArrowDown")  # the first class present
    cards = watched.page.evaluate("document.querySelectorAll('#gallery .card').length")
    assert not watched.page.evaluate(count).startswith("12 of") and cards == int(
        watched.page.evaluate(count).split()[0]
    )
    watched.page.select_option("#filter-source", "")
    watched.page.select_option("#sort", "rms")
    rms = watched.page.evaluate(
        "Array.from(document.querySelectorAll('#gallery .card p')).map(p => parseFloat(p.textContent.split(' ')[3]))"
    )
    assert rms == sorted(rms) and len(rms) == 12
    assert watched.errors == []


@browser
def test_the_screenshot_helper_takes_the_three_pages(site, chromium, tmp_path):
    shots = browser_pages.screenshots(site, tmp_path, chromium)
    assert [p.name for p in shots] == ["site_leaderboard.png", "site_gallery.png", "site_side_by_side.png"]
    assert all(p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in shots)


def test_page_data_writes_a_nan_as_null():
    from lst_fast.atomic_files import finite_or_none
    from lst_fast.website.page_data import data_script

    text = data_script("LST_WALKS", {"walks": [[0, float("nan"), 0.5, float("inf")]]})
    assert text.startswith("window.LST_WALKS = ") and text.endswith(";\n")
    assert json.loads(text[len("window.LST_WALKS = ") : -2]) == {"walks": [[0, None, 0.5, None]]}  # standard JSON
    assert finite_or_none(float("nan")) is None and finite_or_none(0.25) == 0.25


def _script_data(path: Path):
    prefix, _, body = path.read_text().partition(" = ")
    return prefix, json.loads(body.rstrip(";\n"))


def _write_script_data(path: Path, prefix: str, value) -> None:
    path.write_text(f"{prefix} = {json.dumps(value)};\n")


@browser
def test_a_walk_without_numbers_shows_n_a_and_sorts_last(site, tab, tmp_path):
    """A NaN in the results reaches site.js as null (test_page_data_writes_a_nan_as_null): the gallery, a
    walk page's slider and the side-by-side page show n/a, sort that walk last, and raise no error."""
    import shutil

    copy = tmp_path / "site"
    shutil.copytree(site, copy)
    walks_js = copy / "models" / "cnn" / "walks.js"
    prefix, data = _script_data(walks_js)
    P, RMS, STRIKING = 7, 8, 9  # the record's fields, as site.js names them
    for field in (P, RMS, STRIKING):
        data["walks"][0][field] = None
    _write_script_data(walks_js, prefix, data)
    pairs_js = copy / "pairs.js"
    prefix, pairs = _script_data(pairs_js)
    pairs["pairs"][0][6][0][1] = None
    _write_script_data(pairs_js, prefix, pairs)
    walk = sorted((copy / "models" / "cnn" / "walks").glob("*.html"))[0]
    walk.write_text(re.sub(r'"p": [-0-9.e]+', '"p": null', walk.read_text(), count=1))  # the first frame

    watched = _opened(tab, copy / "models" / "cnn" / "index.html")
    feet = "Array.from(document.querySelectorAll('#gallery .card p')).map(p => p.textContent)"
    for order in ("p", "rms", "striking"):
        watched.page.select_option("#sort", order)
        shown = watched.page.evaluate(feet)
        assert len(shown) == 12 and "n/a" in shown[-1] and not any("n/a" in f for f in shown[:-1]), (order, shown)
    # every image loaded before the next page: leaving a page aborts its pending loads, a "failed" request
    assert _load_every_image(watched.page) == [] and watched.errors == []

    watched.open(walk)
    watched.page.focus("#slider")
    watched.page.keyboard.press("Home")
    assert watched.page.evaluate("document.getElementById('frame-label').textContent").endswith("p = n/a")
    assert _load_every_image(watched.page) == [] and watched.errors == []

    watched.open(copy / "side-by-side.html")
    watched.page.focus("#pair")
    watched.page.keyboard.press("ArrowDown")
    # the second pair's images loaded before going back: a load cut short by the next pair is a "failed" request
    assert _load_every_image(watched.page) == []
    watched.page.keyboard.press("ArrowUp")  # back to the first pair, now drawn by site.js
    assert watched.page.evaluate("document.querySelector('.pair-p').textContent") == "n/a"
    assert _load_every_image(watched.page) == [] and watched.errors == []
