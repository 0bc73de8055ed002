"""How big `lst-fast site` makes a site of paper-scale ImageNet evaluations, and how long it takes: synthetic
224 px data (a `tensor:` data set) and synthetic evaluation folders written through EvaluationStore (the
site reads result files only; LST outputs here are the source blended toward the target plus noise, which
compresses like real outputs do: worse than clean images), two models on the same pairs.

    pytest bench/test_site_build.py --benchmark-json=out.json

Measured: one build of MODELS x SOURCES x ROUNDS walks with the default options (12 walk pages per model,
JPEG thumbnails of 96 px in the gallery). Recorded (extra_info): the bytes of each part of the site, the
bytes per walk of the gallery, per walk page and per pair of the side-by-side data, the first page's bytes
(index.html and what it loads), and the seconds per 1,000 walks. The paper-scale size (4 models x 1,000
sources x 5 rounds) is extrapolated from those per-unit bytes; bench/RESULTS.md gives the arithmetic.
Under --benchmark-disable (CI) the case shrinks to 8 sources of 32 px.
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import torch
from torch import nn

from lst_fast.evaluation.config import EvalConfig
from lst_fast.evaluation.store import EvaluationStore
from lst_fast.evaluation.tables import round_pairs, summarize, table1_per_pair, table2_per_source, tables_markdown
from lst_fast.evaluation.targets import round_targets
from lst_fast.geometry import triangle_weights
from lst_fast.run_environment import QUIET_ENVIRONMENT
from lst_fast.website import SiteOptions, build_site
from conftest import environment

MODELS, SOURCES, ROUNDS, SIZE, CLASSES = 2, 100, 5, 224, 10
CI = {"sources": 8, "size": 32}
PAPER = {"models": 4, "sources": 1000, "rounds": 5}


def tiny_model(size: int = SIZE) -> nn.Module:
    """A seeded, untrained small CNN on 3 x size x size images (the walk pages' forwards)."""
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 8, 5, stride=4), nn.ReLU(), nn.AdaptiveAvgPool2d(4), nn.Flatten(), nn.Linear(128, CLASSES)
    )
    model.lst_input_size = (3, size, size)
    return model.eval()


def synthetic_images(n: int, size: int) -> torch.Tensor:
    """Smooth random colour images (uint8): low-resolution noise, upsampled, plus a little grain."""
    generator = torch.Generator().manual_seed(1)
    low = torch.rand(n, 3, 8, 8, generator=generator)
    smooth = nn.functional.interpolate(low, size=(size, size), mode="bicubic", align_corners=False)
    grain = 0.03 * torch.randn(n, 3, size, size, generator=generator)
    return (smooth + grain).clamp(0, 1).mul(255).round().to(torch.uint8)


def write_evaluations(root: Path, sources: int, size: int) -> list:
    """MODELS evaluation folders on the same pairs of a `tensor:` data set of `sources` images."""
    from safetensors.torch import save_file

    images = synthetic_images(sources, size)
    labels = torch.arange(sources) % CLASSES
    data = root / "data.safetensors"
    save_file({"images": images, "labels": labels}, str(data))
    pixels = images.float() / 255
    pool = torch.arange(sources)
    targets = round_targets(labels, ROUNDS, 0)
    folders = []
    for m in range(MODELS):
        spec = f"py:{Path(__file__).resolve()}:tiny_model(size={size})"
        cfg = EvalConfig(
            model=spec, data=f"tensor:{data}", rounds=ROUNDS, num_samples=sources, iterations=8, chunk_size=256
        )
        store = EvaluationStore(root / f"model{m}")
        store.check_or_write_config(cfg)
        store.prepare()
        generator = torch.Generator().manual_seed(10 + m)
        per_round = []
        for r in range(ROUNDS):
            for c in range(math.ceil(sources / cfg.chunk_size)):
                rows = pool[c * cfg.chunk_size : (c + 1) * cfg.chunk_size]
                src, tgt = pixels[rows], pixels[targets[r][rows]]
                noise = 0.02 * torch.randn(src.shape, generator=generator)
                out = (0.55 * src + 0.45 * tgt + noise).clamp(0, 1)
                p = 0.7 + 0.3 * torch.rand(len(rows), generator=generator, dtype=torch.float64)
                chunk = {
                    "source": rows,
                    "target": targets[r][rows],
                    "images": out,
                    "initial_confidence": p,
                    "confidence": p - 0.05,
                    "still_source": torch.ones(len(rows), dtype=torch.float64),
                    "accepted_steps": torch.full((len(rows),), 8),
                    **_distances(out, tgt),
                }
                store.write_chunk(r, c, chunk, cfg)
            per_round.append(store.read_round(r, math.ceil(sources / cfg.chunk_size)))
        points = len(triangle_weights(cfg.triangle_n))
        triangles = []
        for r1, r2 in round_pairs(ROUNDS):
            conf = torch.rand(sources, points, generator=generator, dtype=torch.float64)
            store.write_triangles(r1, r2, conf, cfg)
            triangles.append(conf)
        tables = summarize(
            table1_per_pair(per_round), table2_per_source(triangles, cfg.triangle_n, sources), sources, ROUNDS
        )
        store.write_tables(tables, tables_markdown(tables, cfg))
        folders.append(str(store.root))
    return folders


def _distances(x: torch.Tensor, target: torch.Tensor) -> dict:
    """Table 1's distances, SSIM left at 0: the site shows only RMS, and SSIM at 224 px costs minutes."""
    diff = (x.double() - target.double()).flatten(1)
    l2 = diff.norm(dim=1)
    return {"l2": l2, "rms": l2 / diff.shape[1] ** 0.5, "linf": diff.abs().amax(1), "ssim": torch.zeros_like(l2)}


def _bytes(paths) -> int:
    return sum(p.stat().st_size for p in paths if p.is_file())


def test_site_size_and_build_time(benchmark, tmp_path_factory):
    case = CI if benchmark.disabled else {"sources": SOURCES, "size": SIZE}
    folders = write_evaluations(tmp_path_factory.mktemp("evals"), case["sources"], case["size"])
    sites = []

    def build():
        out = tmp_path_factory.mktemp("site")
        start = time.perf_counter()
        build_site(folders, out, SiteOptions(), env=QUIET_ENVIRONMENT)
        sites.append((out, time.perf_counter() - start))

    benchmark.pedantic(build, rounds=1, iterations=1)
    out, seconds = sites[-1]
    walks = MODELS * case["sources"] * ROUNDS
    models = sorted((out / "models").iterdir())
    gallery = _bytes(p for m in models for p in (m / "img").iterdir()) + _bytes(m / "walks.js" for m in models)
    sources_bytes = _bytes(p for m in models for p in (m / "img").glob("d*"))
    outputs = gallery - sources_bytes
    pages = _bytes(p for m in models for d in ("walks", "full") for p in (m / d).iterdir())
    page_count = sum(len(list((m / "walks").iterdir())) for m in models)
    pairs = _bytes([out / "pairs.js", out / "side-by-side.html"])
    total = _bytes(out.rglob("*"))
    first = _bytes([out / "index.html", out / "static" / "site.css", out / "static" / "site.js"])
    per_walk, per_source, per_page = outputs / walks, sources_bytes / (MODELS * case["sources"]), pages / page_count
    per_pair_model = (pairs - _bytes([out / "side-by-side.html"])) / (case["sources"] * ROUNDS * MODELS)
    paper_walks = PAPER["models"] * PAPER["sources"] * PAPER["rounds"]
    paper = (
        paper_walks * per_walk
        + PAPER["models"] * PAPER["sources"] * per_source
        + PAPER["models"] * 12 * per_page
        + paper_walks * per_pair_model
        + _bytes(out / "cache" / f"{m.name}.safetensors" for m in models) / MODELS * PAPER["models"]
    )
    assert total > 0 and first > 0
    benchmark.extra_info.update(
        {
            **environment("cpu"),
            "walks": walks,
            "image_size": case["size"],
            "site_bytes": total,
            "first_page_bytes": first,
            "gallery_output_bytes_per_walk": per_walk,
            "gallery_source_bytes_per_source": per_source,
            "walk_page_bytes_each": per_page,
            "pairs_bytes_per_walk": per_pair_model,
            "seconds": seconds,
            "seconds_per_1000_walks": seconds / walks * 1000,
            "paper_scale_site_bytes_extrapolated": paper,
        }
    )
    print(benchmark.extra_info)
