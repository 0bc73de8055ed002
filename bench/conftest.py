"""Benchmark environment recorded in every result (torch, CUDA, device, commit)."""

from __future__ import annotations

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
