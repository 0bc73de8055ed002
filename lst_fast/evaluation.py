"""The full evaluation (SPEC.md section 3): Table 1 (distances from LST outputs to their targets) and
Table 2 (triangle statistics) over a pool of correctly classified images, R rounds of targets.

Results are written chunk by chunk (safetensors, atomic rename) under OUT/results; a run restarted with
the same configuration skips finished chunks and ends with the same tables. Under torchrun (an
initialized torch.distributed group) each rank takes every world_size-th chunk and triangle set; every
chunk is seeded by its position alone, so K processes produce exactly the tables of one.
"""
from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from typing import Callable, Dict, Iterator, List, Optional, Sequence, Tuple

import torch
from torch import Tensor

import lst_fast
from lst_fast.data.sources import ImageSet, open_image_set
from lst_fast.geometry import per_source, triangle_confidence, triangle_statistics, triangle_weights
from lst_fast.metrics import distances
from lst_fast.pairing import round_targets
from lst_fast.prepared_model import check_precision
from lst_fast.reference import class_probability
from lst_fast.storage import atomic_save

TABLE1 = ("l2", "rms", "linf", "ssim", "initial_confidence", "confidence", "still_source")
TABLE2 = ("p_source", "mean", "frac_above_0", "frac_above_0.1", "frac_above_0.2", "frac_above_0.3",
          "edge_mean", "edge_min_drop")


@dataclasses.dataclass
class EvalConfig:
    """What an evaluation computes; two runs with equal configs produce equal tables."""

    model: str = "cnn"  # a shipped name, timm:NAME, torchvision:NAME, or an architecture with checkpoint
    checkpoint: Optional[str] = None
    pretrained: bool = True
    data: str = "fashion-mnist"  # see lst_fast.data.sources
    rounds: int = 5
    num_samples: int = 100
    min_confidence: Optional[float] = None  # the paper also asks confidence > 0.6
    iterations: int = 400
    step_size: float = 5e-2
    threshold: float = 0.2
    adv_step_size: float = 2e-3
    init_noise: float = 2 / 255
    triangle_n: int = 10
    chunk_size: int = 256
    seed: int = 0
    precision: str = "fp32"  # "bf16": the fast mode (see lst_fast.traverse)

    def validate(self) -> None:
        for name in ("rounds", "num_samples", "chunk_size", "triangle_n"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.iterations < 0:
            raise ValueError(f"iterations must be >= 0, got {self.iterations}")
        check_precision(self.precision)


def _atomic_save(tensors: Dict[str, Tensor], path: Path, metadata: Optional[dict] = None) -> None:
    atomic_save(tensors, path, {"lst_fast": json.dumps(metadata or {})})


def load_tensors(path: Path) -> Dict[str, Tensor]:
    from safetensors.torch import load_file

    return load_file(str(path))


@torch.no_grad()
def build_pool(model, data: ImageSet, cfg: EvalConfig, device, batch: int = 512) -> Tensor:
    """Indices of up to num_samples correctly classified images (confidence > min_confidence if set),
    drawn in a seeded random order."""
    keep = []
    for start in range(0, len(data), batch):
        index = torch.arange(start, min(start + batch, len(data)))
        logits = model(data.get(index).to(device))
        y = data.labels[index].to(device)
        ok = logits.argmax(1) == y
        if cfg.min_confidence is not None:
            ok &= class_probability(logits, y) > cfg.min_confidence
        keep.append(ok.cpu())
    candidates = torch.nonzero(torch.cat(keep)).flatten()
    order = torch.randperm(len(candidates), generator=torch.Generator().manual_seed(cfg.seed))
    return candidates[order[: cfg.num_samples]].sort().values


def _check_or_write_config(out: Path, cfg: EvalConfig) -> None:
    path = out / "config.json"
    wanted = dataclasses.asdict(cfg)
    if path.exists():
        try:
            found = json.loads(path.read_text())
        except json.JSONDecodeError as error:
            raise ValueError(f"{path} is not valid JSON ({error}); use a fresh --out folder") from error
        if isinstance(found, dict):  # settings added since that folder was written took their defaults
            found = {**dataclasses.asdict(EvalConfig()), **found}
        if found != wanted:
            diff = {k: (found.get(k), v) for k, v in wanted.items() if found.get(k) != v}
            raise ValueError(f"{out} holds results of another configuration (differences, theirs vs ours: {diff}); "
                             "use a fresh --out folder or the same settings")
        return
    out.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(wanted, indent=1))
    tmp.replace(path)


def run_evaluation(cfg: EvalConfig, out_dir, device="cpu", data_root: Optional[str] = None,
                   progress: bool = True, graph: bool = False) -> Dict[str, Dict[str, Tuple[float, float]]]:
    """Run (or resume) the evaluation; write OUT/results/*, OUT/tables.md and OUT/tables.json.

    graph: replay each LST iteration from a CUDA graph (same results; CUDA only).
    """
    from lst_fast.models import resolve_model

    cfg.validate()
    rank, world = _rank_and_world()
    out = Path(out_dir)
    results = out / "results"
    for turn in (0, 1):  # rank 0 writes the config and cleans up first; the others then check it
        if (rank == 0) == (turn == 0):
            try:
                _check_or_write_config(out, cfg)
                results.mkdir(exist_ok=True)
            except OSError as error:
                raise ValueError(f"cannot write to the output folder {out}: {error.strerror or error}") from error
            if rank == 0:
                for stale in results.glob(".*.tmp"):  # left by a killed run; its chunk reruns
                    stale.unlink()
        _barrier(world)
    device = torch.device(device)
    model = resolve_model(cfg.model, device, pretrained=cfg.pretrained, checkpoint=cfg.checkpoint)
    data = open_image_set(cfg.data, data_root)
    labels = data.labels
    pool = build_pool(model, data, cfg, device)
    if len(pool) < 2:
        raise ValueError(f"the pool of correctly classified images has {len(pool)} images; need at least 2")
    pool_labels = labels[pool]
    rounds = round_targets(pool_labels, cfg.rounds, cfg.seed)
    chunks = math.ceil(len(pool) / cfg.chunk_size)

    from tqdm.auto import tqdm

    mine = [(r, c) for r in range(cfg.rounds) for c in range(chunks)][rank::world]
    bar = tqdm(total=len(mine), desc="LST chunks" + (f" (rank {rank})" if world > 1 else ""), disable=not progress)
    todo = []
    for r, c in mine:
        if (results / f"round{r:02d}_chunk{c:05d}.safetensors").exists():
            bar.update(1)
        else:
            todo.append((r, c))

    def chunk_rows(job: Tuple[int, int]) -> Tuple[Tensor, Tensor]:
        r, c = job
        rows = torch.arange(c * cfg.chunk_size, min((c + 1) * cfg.chunk_size, len(pool)))
        return pool[rows], pool[rounds[r][rows]]

    def chunk_images(job: Tuple[int, int]) -> List[Tensor]:
        src, tgt = chunk_rows(job)
        return [data.get(src), data.get(tgt), labels[src]]

    for (r, c), (xs, xt, label) in staged_on_device(todo, chunk_images, device):
        src, tgt = chunk_rows((r, c))
        path = results / f"round{r:02d}_chunk{c:05d}.safetensors"
        generator = torch.Generator(device=device).manual_seed(cfg.seed * 1_000_003 + r * 10_007 + c)
        res = lst_fast.traverse(model, xs, xt, label=label, iterations=cfg.iterations,
                                step_size=cfg.step_size, threshold=cfg.threshold,
                                adv_step_size=cfg.adv_step_size, init_noise=cfg.init_noise,
                                precision=cfg.precision, graph=graph, generator=generator)
        with torch.no_grad():
            still = model(res.images).argmax(1) == res.label
        d = distances(res.images, xt)
        _atomic_save({"source": src, "target": tgt, "images": res.images, "initial_confidence": res.initial_confidence,
                      "confidence": res.confidence, "still_source": still.double(),
                      "accepted_steps": res.accepted_steps, **d}, path,
                     metadata={"round": r, "chunk": c, "config": dataclasses.asdict(cfg)})
        bar.update(1)
    bar.close()
    _barrier(world)

    per_round = [_load_round(results, r, chunks) for r in range(cfg.rounds)]
    table1 = {k: torch.cat([pr[k].double().cpu() for pr in per_round]) for k in TABLE1}
    _compute_triangles(model, data, pool, per_round, cfg, results, device, rank, world)
    _barrier(world)
    table2 = _triangle_table(pool, cfg, results)
    tables = {"table1": {k: _mean_std(v) for k, v in table1.items()},
              "table2": {k: _mean_std(v) for k, v in table2.items()},
              "pairs": len(pool) * cfg.rounds, "sources": len(pool)}
    if rank == 0:
        (out / "tables.json").write_text(json.dumps(tables, indent=1))
        (out / "tables.md").write_text(tables_markdown(tables, cfg))
    _barrier(world)
    return tables


def staged_on_device(jobs: Sequence, load: Callable[[object], List[Tensor]], device: torch.device) -> Iterator:
    """Yield (job, tensors on `device`) for each job; on CUDA the next job's tensors are copied from pinned
    memory on a side stream while the current job computes."""
    device = torch.device(device)
    if device.type != "cuda":
        for job in jobs:
            yield job, [t.to(device) for t in load(job)]
        return
    copy_stream = torch.cuda.Stream(device)

    def stage(job):
        pinned = [t.pin_memory() for t in load(job)]
        with torch.cuda.stream(copy_stream):
            return job, [t.to(device, non_blocking=True) for t in pinned], pinned

    pending = stage(jobs[0]) if len(jobs) else None
    for i in range(len(jobs)):
        job, moved, _pinned = pending  # the pinned sources stay referenced until their copy is consumed
        compute = torch.cuda.current_stream(device)
        compute.wait_stream(copy_stream)
        for t in moved:
            t.record_stream(compute)  # allocated on the copy stream, used on the compute stream
        pending = stage(jobs[i + 1]) if i + 1 < len(jobs) else None
        yield job, moved


def _rank_and_world() -> Tuple[int, int]:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _barrier(world: int) -> None:
    if world > 1:
        import torch.distributed as dist

        dist.barrier()


def _load_round(results: Path, r: int, chunks: int) -> Dict[str, Tensor]:
    parts = [load_tensors(results / f"round{r:02d}_chunk{c:05d}.safetensors") for c in range(chunks)]
    return {k: torch.cat([p[k] for p in parts]) for k in parts[0]}


def _round_pairs(rounds: int) -> List[Tuple[int, int]]:
    return [(r1, r2) for r1 in range(rounds) for r2 in range(r1 + 1, rounds)]


def _triangle_path(results: Path, r1: int, r2: int) -> Path:
    return results / f"triangles_r{r1:02d}_r{r2:02d}.safetensors"


def _compute_triangles(model, data: ImageSet, pool, per_round, cfg, results: Path, device, rank, world) -> None:
    """Confidence over the triangle (source, output of round r1, output of round r2) for every source
    and pair of rounds; this rank's share of the pairs, skipping finished ones."""
    for r1, r2 in _round_pairs(cfg.rounds)[rank::world]:
        path = _triangle_path(results, r1, r2)
        if path.exists():
            continue
        conf = []
        for start in range(0, len(pool), cfg.chunk_size):
            rows = slice(start, start + cfg.chunk_size)
            conf.append(triangle_confidence(model, data.get(pool[rows]).to(device),
                                            per_round[r1]["images"][rows].to(device),
                                            per_round[r2]["images"][rows].to(device),
                                            data.labels[pool[rows]].to(device), n=cfg.triangle_n,
                                            precision=cfg.precision).cpu())
        _atomic_save({"confidence": torch.cat(conf)}, path)


def _triangle_table(pool, cfg, results: Path) -> Dict[str, Tensor]:
    """Table 2 per source: its triangles' statistics averaged (the edge minimum: minimum)."""
    weights = triangle_weights(cfg.triangle_n)
    pairs = _round_pairs(cfg.rounds)
    if not pairs:  # one round: no pair of outputs, no triangles
        return {k: torch.empty(0, dtype=torch.float64) for k in TABLE2}
    stats = [triangle_statistics(load_tensors(_triangle_path(results, r1, r2))["confidence"], weights) for r1, r2 in pairs]
    stacked = {k: torch.cat([s[k] for s in stats]) for k in stats[0]}
    return per_source(stacked, torch.arange(len(pool)).repeat(len(stats)), len(pool))


def _mean_std(values: Tensor) -> Tuple[float, float]:
    values = values[~values.isnan()] if values.numel() else values
    if values.numel() == 0:
        return (float("nan"), float("nan"))
    return (float(values.mean()), float(values.std()) if values.numel() > 1 else 0.0)


def tables_markdown(tables: dict, cfg: EvalConfig) -> str:
    lines = [f"# LST evaluation: model `{cfg.model}`, data `{cfg.data}`", "",
             f"{tables['sources']} sources x {cfg.rounds} rounds = {tables['pairs']} pairs; "
             f"iterations {cfg.iterations}, step {cfg.step_size:g}, threshold {cfg.threshold:g}, "
             f"adversarial step {cfg.adv_step_size:g}, seed {cfg.seed}.", ""]
    for title, key in (("Table 1: LST output vs its target (mean ± std over pairs)", "table1"),
                       ("Table 2: triangles (source, two LST outputs), mean ± std over sources", "table2")):
        cols = tables[key]
        lines += [f"## {title}", "", "| " + " | ".join(cols) + " |", "|" + "---|" * len(cols),
                  "| " + " | ".join(f"{m:.4f} ± {s:.4f}" for m, s in cols.values()) + " |", "",
                  "LaTeX:", "", "```", " & ".join(f"${m:.3f} \\pm {s:.3f}$" for m, s in cols.values()) + r" \\",
                  "```", ""]
    return "\n".join(lines)
