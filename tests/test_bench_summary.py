"""bench/summarize.py on synthetic results: the speed table keeps each model on one row, with every mode
against the paper loop, when the modes ran different iteration counts (k), as they do on CUDA."""

from __future__ import annotations

import json
import runpy
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[1] / "bench"
# (method, k, seconds of the k span, seconds of the 3k span); batch 128: steady = 128 * 2k / (t3k - tk)
RUNS = [
    ("paper", 4, 0.60, 1.40),  # 1,280 img-iter/s
    ("one_pass", 4, 0.50, 1.02),  # 1,969
    ("lst_fp32", 4, 0.45, 0.97),  # 1,969
    ("lst_bf16", 10, 0.50, 0.90),  # 6,400
    ("expert_compile", 10, 0.40, 0.72),  # 8,000
]


def write_results(path: Path) -> None:
    with open(path, "w") as f:
        for method, k, short_s, long_s in RUNS:
            for span, seconds in (("k", short_s), ("3k", long_s)):
                iterations = k * (3 if span == "3k" else 1)
                info = {
                    "kind": "lst_speed",
                    "device_name": "NVIDIA H200",
                    "model": "resnet50",
                    "method": method,
                    "batch": 128,
                    "image_size": 224,
                    "iterations": iterations,
                    "k": k,
                    "span": span,
                    "seconds": seconds,
                    "img_iter_per_s": 128 * iterations / seconds,
                    "backend": "native",
                }
                f.write(json.dumps({"name": f"{method}-{span}", "extra_info": info}) + "\n")


def test_every_mode_shares_the_paper_loops_row_whatever_its_k(tmp_path, monkeypatch, capsys):
    path = tmp_path / "results.jsonl"
    write_results(path)
    # the script as `python bench/summarize.py FILE` runs it, in this process (a torch start fewer)
    monkeypatch.setattr(sys, "argv", ["summarize.py", str(path)])
    runpy.run_path(str(BENCH / "summarize.py"), run_name="__main__")
    out = capsys.readouterr().out
    rows = [line for line in out.splitlines() if line.startswith("| NVIDIA H200 | resnet50 |")]
    assert len(rows) == 1, out  # keyed by k, the fp32 loops (k 4) and the bf16 modes (k 10) made two rows
    cells = {m: c.strip() for m, c in zip(header_methods(out), rows[0].split("|")[5:-1], strict=True)}
    assert cells["paper"].startswith("1,280 (1.00x)"), cells
    assert cells["lst_bf16"].startswith("6,400 (5.00x)") and cells["lst_bf16"].endswith("k 10"), cells
    assert cells["expert_compile"].startswith("8,000 (6.25x)"), cells
    assert cells["one_pass"].endswith("k 4"), cells


def header_methods(out: str) -> list:
    header = next(line for line in out.splitlines() if line.startswith("| device | model | batch | px |"))
    return [c.strip() for c in header.split("|")[5:-1]]
