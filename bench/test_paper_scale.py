"""The rehearsal of the paper's comparison at ImageNet size: everything around the model's forward and
backward, measured per stage, the way a user runs it.

    pytest bench/test_paper_scale.py -k full --benchmark-json=out.json

It writes its own ImageNet-like folder (`imagefolder:`, 1,000 JPEG files of 500 x 375 in 3 classes, about
ImageNet val's file size) and uses stand-in models that classify it correctly with a forward that costs
next to nothing (tests/standins/colour_models.py: the mean colour of the image), so what is timed is the
pipeline: decoding, the pool, the scan, the walks' bookkeeping and metrics, the triangles, the tables, the
site. Then `lst-fast leaderboard` (3 models at 224 px, 200 sources, 2 rounds, --iterations 2) and
`lst-fast site` on its folder, each once (rounds=1: a second build would reuse the first's files).

Recorded (extra_info, and bench/results/paper_scale_<date>.json when timed): each command's seconds, its
stages' seconds (lst_fast.stage_times: what the command prints last) and milliseconds per walk, and per
pool image: data set opens, decodes (the most of any image in one preprocessing, and the mean) and pixel
digests (lst_fast.data.decoded counts them). bench/RESULTS.md extrapolates these per-unit costs to the
paper's 20,000 walks.

Under --benchmark-disable (CI: the `quick` case) it runs once at toy size, untimed, and still checks that no
pool image is decoded twice in a preprocessing.
"""

from __future__ import annotations

import datetime
import json
import os
import sys
from pathlib import Path
from typing import Dict

import pytest

from lst_fast.cli import main
from lst_fast.data.decoded import decoded_once
from lst_fast.stage_times import stage_clock
from conftest import environment

STANDINS = Path(__file__).resolve().parents[1] / "tests" / "standins"
sys.path.insert(0, str(STANDINS))
from colour_models import colour_images  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
# images: JPEG files (width, height); size: the models' input px; sources, rounds, iterations: the leaderboard's.
CASES: Dict[str, dict] = {
    "full": {"images": 1000, "width": 500, "height": 375, "size": 224, "sources": 200, "rounds": 2, "iterations": 2},
    "quick": {"images": 24, "width": 64, "height": 48, "size": 32, "sources": 8, "rounds": 2, "iterations": 2},
}
SHARPNESS = (20.0, 12.0, 8.0)  # three stand-ins: the same preprocessing, other logits
PAPER = {"models": 4, "sources": 1000, "rounds": 5}

_done: Dict[str, dict] = {}  # case -> the leaderboard's folder and record (the site test reads it)


def _folder(tmp_path_factory, case: dict) -> Path:
    return colour_images(tmp_path_factory.mktemp("imagenet_like"), case["images"], case["width"], case["height"])


def _models(case: dict) -> list:
    specs = [f"py:{STANDINS / 'colour_models.py'}:build(size={case['size']}, sharpness={s})" for s in SHARPNESS]
    return [a for spec in specs for a in ("--model", spec)]


def _record(scope, clock, walks: int, pool_size: int, seconds: float) -> dict:
    """A command's numbers: seconds, per stage (and ms per walk), and opens/decodes/digests per pool image."""
    counts = scope.counts
    per_view = max(1, len({view for view, _ in counts.decodes}))
    return {
        "seconds": seconds,
        "walks": walks,
        "ms_per_walk": 1000 * seconds / walks,
        "stages": {name: round(s, 3) for name, s in clock.seconds.items()},
        "stage_ms_per_walk": {name: round(1000 * s / walks, 3) for name, s in clock.seconds.items()},
        "opens": counts.opens,
        "digests": counts.digests,
        "decodes": sum(counts.decodes.values()),
        "most_decodes_of_an_image_per_preprocessing": counts.most_decodes(),
        "decodes_per_pool_image_per_preprocessing": sum(counts.decodes.values()) / (pool_size * per_view),
        "opens_per_pool_image": counts.opens / pool_size,
        "digests_per_pool_image": counts.digests / pool_size,
        "preprocessings": per_view,
    }


def _leaderboard(folder: Path, out: Path, case: dict) -> dict:
    argv = ["leaderboard", *_models(case), "--data", f"imagefolder:{folder}", "--num-samples", str(case["sources"])]
    argv += ["--rounds", str(case["rounds"]), "--iterations", str(case["iterations"]), "--no-progress"]
    with decoded_once() as scope, stage_clock() as clock:
        assert main(argv + ["--out", str(out)]) == 0
    pool = json.loads((out / "pool.json").read_text())
    walks = len(SHARPNESS) * len(pool["indices"]) * case["rounds"]
    return _record(scope, clock, walks, len(pool["indices"]), clock.total())


# The site's parts, timed from here until the site marks its own stages (lst_fast.stage_times): the functions
# of lst_fast.website.build that build_site calls, by name; one the site no longer has is left out.
def _site(board: Path, out: Path, case: dict) -> dict:
    with decoded_once() as scope, stage_clock() as clock:  # the site marks its own stages
        # the stand-in models are py: factories this benchmark wrote itself: their code is trusted
        assert main(["site", str(board), "--out", str(out), "--no-progress", "--trust-folder-code"]) == 0
    pool = json.loads((board / "pool.json").read_text())
    walks = len(SHARPNESS) * len(pool["indices"]) * case["rounds"]
    return _record(scope, clock, walks, len(pool["indices"]), clock.total())


def _save(name: str, record: dict) -> None:
    RESULTS.mkdir(exist_ok=True)
    date = datetime.date.today().isoformat()
    path = RESULTS / f"cpu_{date}_paper_scale.json"
    found = json.loads(path.read_text()) if path.is_file() else {"environment": environment("cpu")}
    found[name] = record
    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    found[name]["load_average"] = load
    path.write_text(json.dumps(found, indent=1) + "\n")


def _check(record: dict) -> None:
    assert record["opens"] == 1
    assert record["most_decodes_of_an_image_per_preprocessing"] <= 1  # no pool image decoded twice
    assert record["digests"] <= 1


@pytest.mark.parametrize("case_name", ["full", "quick"])
def test_paper_scale_leaderboard(benchmark, tmp_path_factory, case_name):
    if (case_name == "quick") != benchmark.disabled:
        pytest.skip("quick runs untimed (--benchmark-disable), full runs timed")
    case = CASES[case_name]
    folder = _folder(tmp_path_factory, case)
    outs = iter(tmp_path_factory.mktemp(f"board{k}") for k in range(1000))
    records = []

    def run():
        out = next(outs)
        records.append(_leaderboard(folder, out, case))
        _done[case_name] = {"folder": out, "record": records[-1]}

    benchmark.pedantic(run, rounds=1, iterations=1)
    record = records[-1]
    _check(record)
    benchmark.extra_info.update({"case": case, "leaderboard": record, **environment("cpu")})
    if not benchmark.disabled:
        _save("leaderboard", {"case": case, **record})


@pytest.mark.parametrize("case_name", ["full", "quick"])
def test_paper_scale_site(benchmark, tmp_path_factory, case_name):
    if (case_name == "quick") != benchmark.disabled:
        pytest.skip("quick runs untimed (--benchmark-disable), full runs timed")
    case = CASES[case_name]
    if case_name not in _done:  # run alone: the leaderboard first, untimed
        out = tmp_path_factory.mktemp("board")
        _done[case_name] = {"folder": out, "record": _leaderboard(_folder(tmp_path_factory, case), out, case)}
    board = _done[case_name]["folder"]
    sites = iter(tmp_path_factory.mktemp(f"site{k}") for k in range(1000))
    records = []
    benchmark.pedantic(lambda: records.append(_site(board, next(sites), case)), rounds=1, iterations=1)
    record = records[-1]
    _check(record)
    benchmark.extra_info.update({"case": case, "site": record, **environment("cpu")})
    if not benchmark.disabled:
        _save("site", {"case": case, **record})
