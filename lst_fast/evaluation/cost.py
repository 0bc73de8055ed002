"""What an evaluation's walks cost, kept next to its results: OUT/walk_cost.json (rank k of a torchrun:
OUT/walk_cost.rank<k>.json), one entry per chunk walked: its images, the iterations tried, the seconds
from the start of its walk to its file written, and the device it ran on.

It is a record, not a result: no table reads it, and a resumed run adds the chunks it walks. The
leaderboard's cost columns (`walk_cost`) sum it over the evaluation's chunks: seconds and img-iter/s
(images x iterations per second) on the device they ran on; n/a when a chunk has no entry (walked by an
earlier lst_fast)."""

from __future__ import annotations

import functools
import json
import os
import platform
from pathlib import Path
from typing import Any, Dict, Optional, Union

import torch

from lst_fast.atomic_files import atomic_write_text, standard_json

__all__ = ["WalkCost", "device_name", "walk_cost"]

COST_FILE = "walk_cost.json"


def _file(root: Path, rank: int) -> Path:
    return root / (COST_FILE if rank == 0 else f"walk_cost.rank{rank}.json")


@functools.lru_cache(maxsize=None)
def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.partition(":")[2].strip()
    except OSError:
        pass
    return platform.processor() or "CPU"


def device_name(device: Union[str, torch.device]) -> str:
    """The device in words: the GPU's name, or the CPU's model and the threads torch uses."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    if device.type == "cpu":
        return f"{_cpu_name()}, {torch.get_num_threads()} threads"
    return str(device)


class WalkCost:
    """The cost file of one rank of an evaluation in `root`, written after each chunk."""

    def __init__(self, root: Union[str, os.PathLike], rank: int, device: Union[str, torch.device]) -> None:
        self.path = _file(Path(root), rank)
        self.device = device_name(device)
        self.chunks: Dict[str, Dict[str, Any]] = _read(self.path)

    def add(self, round_: int, chunk: int, images: int, iterations: int, seconds: float) -> None:
        self.chunks[f"{round_}/{chunk}"] = {
            "images": int(images),
            "iterations": int(iterations),
            "seconds": float(seconds),
            "device": self.device,
        }
        atomic_write_text(self.path, standard_json({"chunks": self.chunks}, indent=1) + "\n")


def _read(path: Path) -> Dict[str, Dict[str, Any]]:
    try:
        found = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    chunks = found.get("chunks") if isinstance(found, dict) else None
    if not isinstance(chunks, dict):
        return {}
    good = {}
    for key, entry in chunks.items():
        if (
            isinstance(entry, dict)
            and all(isinstance(entry.get(k), (int, float)) for k in ("images", "iterations", "seconds"))
            and isinstance(entry.get("device"), str)
        ):
            good[key] = entry
    return good


def walk_cost(folder: Union[str, os.PathLike], rounds: int, chunks: int) -> Optional[Dict[str, Any]]:
    """{walks, seconds, img_iter_per_s, device} of the evaluation in `folder` (`rounds` x `chunks` chunks),
    or None when a chunk has no entry."""
    found: Dict[str, Dict[str, Any]] = {}
    for path in sorted(Path(folder).glob("walk_cost*.json")):
        found.update(_read(path))
    entries = [found.get(f"{r}/{c}") for r in range(rounds) for c in range(chunks)]
    if not entries or any(e is None for e in entries):
        return None
    seconds = sum(e["seconds"] for e in entries)
    work = sum(e["images"] * e["iterations"] for e in entries)
    devices = sorted({e["device"] for e in entries})
    return {
        "walks": sum(e["images"] for e in entries),
        "seconds": seconds,
        "img_iter_per_s": work / seconds if seconds > 0 else None,
        "device": devices[0] if len(devices) == 1 else "mixed: " + "; ".join(devices),
    }


# -- in the leaderboard's files (a table of its own: timings differ between runs, the ranked table does not)

COST_HEADERS = ("walks", "walk seconds", "img-iter/s", "device")
CSV_COLUMNS = ("walks", "walk_seconds", "img_iter_per_s", "device")


def cost_cells(cost: Optional[Dict[str, Any]]) -> list:
    """The cost of one leaderboard row as printed: walks, seconds, img-iter/s, device (n/a without a record)."""
    if cost is None:
        return ["n/a"] * len(COST_HEADERS)
    rate = cost["img_iter_per_s"]
    return [str(cost["walks"]), f"{cost['seconds']:.1f}", "n/a" if rate is None else f"{rate:.0f}", cost["device"]]


def cost_markdown(rows: list) -> str:
    """The leaderboard's cost section: what each model's walks cost, on the device they ran on."""
    lines = [
        "## What each model cost",
        "",
        "Its walks: seconds from the start of each chunk's walk to its file written, summed, and img-iter/s (images "
        "x iterations per second). A record of this run on this machine, not a result: it is not ranked.",
        "",
        "| model | " + " | ".join(COST_HEADERS) + " |",
        "|---|" + "---|" * len(COST_HEADERS),
    ]
    for row in rows:
        lines.append(f"| `{row['model']}` | " + " | ".join(cost_cells(row.get("cost"))) + " |")
    return "\n".join(lines) + "\n"


def cost_latex(rows: list) -> str:
    from lst_fast.evaluation.tables import latex_text

    lines = [
        "% What each model cost: its walks' seconds and img-iter/s on the device they ran on (not ranked)",
        r"\begin{tabular}{lrrrl}",
        r"\toprule",
        "model & " + " & ".join(latex_text(h) for h in COST_HEADERS) + r" \\",
        r"\midrule",
    ]
    for row in rows:
        cells = [latex_text(c) for c in cost_cells(row.get("cost"))]
        lines.append(f"\\texttt{{{latex_text(row['model'])}}} & " + " & ".join(cells) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}"]
    return "\n".join(lines) + "\n"


def cost_csv_cells(cost: Optional[Dict[str, Any]]) -> list:
    if cost is None:
        return [""] * len(CSV_COLUMNS)
    rate = cost["img_iter_per_s"]
    return [cost["walks"], repr(float(cost["seconds"])), "" if rate is None else repr(float(rate)), cost["device"]]
