"""What the one-walk pages need from the model, computed once per run and cached in the site's folder
(OUT/cache/<run>.safetensors, keyed by the run's files, the build's options and the digests of the weights
and pixels the forwards use (lst_fast.website.content), so a rebuild reuses it, an added model computes
only its own, and changed weights or data are never served from an old cache):

- frames: the stored walk rerun with recording. Each chunk holding a chosen walk is walked again as the
  evaluation walked it (the same sources, targets, labels, settings and the chunk's seed), so in exact
  mode the last frame is the stored LST output bit for bit (`exact` says whether it is);
- the source-class confidence along the straight line from the source to the LST output;
- the width profile at the LST output (lst_fast.geometry.width_profile).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional

import torch
from torch import Tensor

from lst_fast.data.image_set import ImageSet
from lst_fast.evaluation.finished import FinishedRun
from lst_fast.evaluation.runner import chunk_seed
from lst_fast.evaluation.store import load_tensors
from lst_fast.geometry import linear_path_confidence, width_profile
from lst_fast.plots import WIDTH_DIRECTIONS, WIDTH_RADII
from lst_fast.run_environment import DEFAULT_ENVIRONMENT, RunEnvironment
from lst_fast.stage_times import timed_stage
from lst_fast.walk.result import METADATA_KEY
from lst_fast.walk.traversal import traverse
from lst_fast.website.walks import WalkTable

__all__ = ["LINE_STEPS", "WIDTH_DIRECTIONS", "WIDTH_RADII", "ChosenWalks", "DetailsCache", "walk_details"]

LINE_STEPS = 21


CACHE_FORMAT = 3  # 2: frames as uint8 and the last one as float; 3: width directions drawn in float32


@dataclass(frozen=True)
class ChosenWalks:
    """The walks shown on pages of their own: their rows of the walk table and their stored LST outputs
    (K, C, H, W), in the same order."""

    rows: List[int]
    outputs: Tensor


@dataclass(frozen=True)
class DetailsCache:
    """Where a run's walk details are cached, and the digests of the weights and pixels they come from
    (lst_fast.website.content.checked_content), part of the cache's key."""

    path: Path
    content: str = ""


def _key(run: FinishedRun, rows: List[int], frames: int, content: str) -> str:
    text = json.dumps([CACHE_FORMAT, run.signature(), rows, frames, LINE_STEPS, WIDTH_RADII, WIDTH_DIRECTIONS, content])
    return hashlib.sha256(text.encode()).hexdigest()


@timed_stage("walk details")
def walk_details(
    run: FinishedRun,
    model: torch.nn.Module,
    data: ImageSet,
    table: WalkTable,
    chosen: ChosenWalks,
    cache: DetailsCache,
    frames: int = 8,
    env: RunEnvironment = DEFAULT_ENVIRONMENT,
) -> Dict[str, Tensor]:
    """For each chosen walk (`chosen.rows`, its stored LST output in `chosen.outputs`): "frames" (K, F, C, H,
    W; uint8, the 8-bit values the PNGs show), "last_frame" (K, C, H, W: the rerun's last iterate, float),
    "frame_iterations" (F,), "frame_confidence" (K, F), "exact" (K,), "line" (K, LINE_STEPS), "radii",
    "width_low" and "width_high" (K, radii); read from `cache` when it holds this run's with these options
    and content, else computed (batched) and written there."""
    from tqdm.auto import tqdm

    from lst_fast.atomic_files import atomic_save_tensors

    rows, outputs = chosen.rows, chosen.outputs
    if not rows:  # no walk pages: nothing to compute
        return {}
    key = _key(run, rows, frames, cache.content)
    if cache.path.is_file():
        found = _cached(cache.path, key)
        if found is not None:
            return found
    cfg, device = run.cfg, torch.device(env.device)
    every = max(1, cfg.lst.iterations // frames)
    jobs = sorted({(int(table.round[i]), int(table.position[i]) // cfg.chunk_size) for i in rows})
    bar = tqdm(total=len(jobs) + 2, disable=not env.progress, desc=f"site: {run.name}'s walks")
    recorded: Dict[int, Tensor] = {}
    confidence: Dict[int, Tensor] = {}
    iterations: Optional[Tensor] = None
    for r, c in jobs:
        src = run.rounds[r]["source"][c * cfg.chunk_size : (c + 1) * cfg.chunk_size]
        tgt = run.rounds[r]["target"][c * cfg.chunk_size : (c + 1) * cfg.chunk_size]
        generator = torch.Generator(device=device).manual_seed(chunk_seed(cfg.seed, r, c))
        settings = cfg.lst.replace(graph=False, record_every=every, record_device="cpu", progress=False)
        res = traverse(
            model,
            data.get(src).to(device),
            data.get(tgt).to(device),
            settings,
            label=data.labels[src].to(device),
            generator=generator,
        )
        assert res.trace_images is not None and res.trace_confidence is not None
        iterations = res.trace_iterations
        for i in rows:
            if int(table.round[i]) == r and int(table.position[i]) // cfg.chunk_size == c:
                k = int(table.position[i]) - c * cfg.chunk_size
                recorded[i] = res.trace_images[:, k].cpu()
                confidence[i] = res.trace_confidence[:, k].double().cpu()
        bar.update(1)
    sources = data.get(table.source[rows])
    label = data.labels[table.source[rows]]
    frames_t = torch.stack([recorded[i] for i in rows])
    exact = torch.tensor([torch.equal(frames_t[k, -1], outputs[k]) for k in range(len(rows))])
    line = linear_path_confidence(model, sources.to(device), outputs.to(device), label.to(device), steps=LINE_STEPS)
    bar.update(1)
    width = width_profile(
        model,
        outputs.to(device),
        (outputs - sources).to(device),
        label.to(device),
        list(WIDTH_RADII),
        k=WIDTH_DIRECTIONS,
        generator=torch.Generator(device=device).manual_seed(cfg.seed),
    )
    bar.update(1)
    bar.close()
    details = {
        # the frames as the PNGs hold them (8 bits; a quarter of float32 in the cache), the last one exact
        "frames": frames_t.clamp(0, 1).mul(255).round().to(torch.uint8).contiguous(),
        "last_frame": frames_t[:, -1].contiguous(),
        "frame_iterations": iterations if iterations is not None else torch.zeros(0, dtype=torch.long),
        "frame_confidence": torch.stack([confidence[i] for i in rows]),
        "exact": exact,
        "line": line.double().cpu(),
        "radii": width["radii"].double(),
        "width_low": width["low"].double().cpu(),
        "width_high": width["high"].double().cpu(),
    }
    cache.path.parent.mkdir(parents=True, exist_ok=True)
    atomic_save_tensors(details, cache.path, {METADATA_KEY: json.dumps({"key": key})})
    return details


def _cached(path: Path, key: str) -> Optional[Dict[str, Tensor]]:
    from safetensors import safe_open

    try:
        with safe_open(str(path), "pt") as f:
            found = json.loads((f.metadata() or {}).get(METADATA_KEY, "{}")).get("key")
    except Exception:  # noqa: BLE001  an unreadable cache is recomputed
        return None
    return load_tensors(path) if found == key else None


@timed_stage("target confidences")
def target_confidences(
    run: FinishedRun,
    model: torch.nn.Module,
    data: ImageSet,
    table: WalkTable,
    cache: Path,
    device="cpu",
    batch: int = 256,
    content: str = "",
) -> Tensor:
    """The source class's confidence at each walk's target image (one forward per distinct target,
    batched), for the gallery's captions; cached in `cache` like walk_details (keyed on `content` too)."""
    from lst_fast.atomic_files import atomic_save_tensors
    from lst_fast.backends.confidence import class_probability
    from lst_fast.walk.runtime import eval_mode

    key = hashlib.sha256(json.dumps([run.signature(), "targets", content]).encode()).hexdigest()
    if cache.is_file():
        found = _cached(cache, key)
        if found is not None:
            return found["confidence"]
    targets, where = torch.unique(table.target, return_inverse=True)
    logits = []
    with torch.no_grad(), eval_mode(model):
        for start in range(0, len(targets), batch):
            logits.append(model(data.get(targets[start : start + batch]).to(device)).double().cpu())
    confidence = class_probability(torch.cat(logits)[where], table.source_class)
    cache.parent.mkdir(parents=True, exist_ok=True)
    atomic_save_tensors({"confidence": confidence}, cache, {METADATA_KEY: json.dumps({"key": key})})
    return confidence
