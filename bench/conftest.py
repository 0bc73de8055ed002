"""Benchmark environment recorded in every result (torch, CUDA, device, commit), and each result written
as soon as it is measured: with LST_BENCH_RESULTS=FILE set, every benchmark test appends one JSON line to
FILE when it ends (its name, its timing statistics and its extra_info, as in pytest-benchmark's JSON), so
a run killed halfway keeps what it measured; `python bench/summarize.py FILE` reads such a file."""

from __future__ import annotations

import datetime
import json
import os
import subprocess
from pathlib import Path

import pytest
import torch

import lst_fast

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def _commit() -> str:
    if os.environ.get("LST_FAST_COMMIT"):  # machines that get the tree without .git
        return os.environ["LST_FAST_COMMIT"]
    try:
        root = Path(__file__).resolve().parents[1]
        return (
            subprocess.run(
                ["git", "-C", str(root), "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=False
            ).stdout.strip()
            or "unknown"
        )
    except OSError:
        return "unknown"


def environment(device: str) -> dict:
    name = torch.cuda.get_device_name() if device == "cuda" else "cpu"
    # The backend says whether the rows timed our compiled kernels or the pure-PyTorch fallback.
    return {
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "device_name": name,
        "threads": torch.get_num_threads(),
        "commit": _commit(),
        "lst_fast": lst_fast.__version__,
        "backend": lst_fast.backend_info().get(device, "unknown"),
    }


def median_seconds(benchmark) -> "float | None":
    """Median of the timed rounds, or None under --benchmark-disable (CI runs the code once, untimed)."""
    stats = getattr(benchmark, "stats", None)
    return None if stats is None else stats.stats.median


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


@pytest.fixture(params=DEVICES)
def device(request):
    return request.param


@pytest.fixture(autouse=True)
def _write_result_when_measured(request):
    """After a benchmark test (pass or fail), its result as one line of LST_BENCH_RESULTS, flushed."""
    path = os.environ.get("LST_BENCH_RESULTS")
    wanted = path and "benchmark" in request.fixturenames
    benchmark = request.getfixturevalue("benchmark") if wanted else None  # held past its teardown
    yield
    if benchmark is None:
        return
    stats = getattr(benchmark, "stats", None)
    if stats is None or not benchmark.extra_info:
        return  # not timed (--benchmark-disable, a skip, or it failed before measuring)
    timing = {k: getattr(stats.stats, k) for k in ("min", "max", "mean", "median", "rounds")}
    line = {"name": request.node.name, "fullname": request.node.nodeid, "stats": timing}
    line["datetime"] = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    line["extra_info"] = benchmark.extra_info
    with open(path, "a") as f:
        f.write(json.dumps(line) + "\n")
        f.flush()
        os.fsync(f.fileno())
