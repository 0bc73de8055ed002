"""A blind-spot leaderboard (`lst-fast leaderboard`): many models, one data set, one shared pool, one row
per model, ranked.

    OUT/pool.json                 the shared pool (lst_fast.evaluation.pool), built once by every listed model
    OUT/<model>/                  that model's `lst-fast eval` folder on the pool (run_evaluation, resumable)
    OUT/<model>/scan.json         its accuracy and confidence on the images the pool's scan looked at
    OUT/leaderboard.{md,tex,csv,json}, OUT/leaderboard.png    the ranked table and its figure
    OUT/verdicts/<A>/<B>.safetensors   model B's verdict on model A's LST outputs (lst_fast.evaluation.verdicts)
    OUT/leaderboard_verdicts.{csv,png}   the verdict matrices (also in leaderboard.md, .tex and .json)

Resumable at every level: a pool.json of the same data set and settings is reused (another is refused),
finished evaluations are reused chunk by chunk, and a model added to the list is evaluated on the part of
the fixed pool it classifies correctly, so the rows of the models already there do not change. Under
torchrun rank 0 builds the pool and writes the tables; every rank takes its share of each evaluation.

Every mean carries a 95% bootstrap interval over the source images (the percentile interval of
`resamples` seeded resamples of the pool's positions; each model's mean over the resampled sources it
has). Pairing is read from the result files: every model's files must hold, in every round, the pool's
target for each of its sources (the pool's seed and rounds), or the leaderboard is refused, naming what
differs. Model a ranks above model b only when the 95% interval of the mean of their per-source
differences (a - b on the sources both have, under the same resamples) in the ranking column excludes
zero, and only on at least MIN_SHARED_SOURCES shared sources with a value (a NaN confidence is no value,
never "below"). A model's rank is 1 + the number of models ranked above it in that sense; models with the
same rank share it ("2="). A model with fewer than MIN_SHARED_SOURCES sources with a value in the ranking
column is not ranked: its row is marked in every file (JSON "too_few_sources", "(too few)" beside its
sources in Markdown and LaTeX, the CSV's note). A model that classifies too few of the pool's images to be
evaluated gets a row that says so, and no rank; a ranking column that has no value for any model ranks no
one (the caption says so).

Pairing is checked on content too: each model's OUT/<model>/provenance.json must record the pool's pixel
digest over the pool's images (else the leaderboard is refused, naming the folder), and each row records
its weights and pixel digests ("provenance"; null for a folder of an earlier lst_fast, which records none).
A model whose weights changed since its folder was written is refused when its evaluation resumes.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import hashlib
import io
import json
import math
import re
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch
from torch import Tensor

from lst_fast import plots
from lst_fast.atomic_files import atomic_write_text, standard_json
from lst_fast.checks import check_count
from lst_fast.data.decoded import decoding_once
from lst_fast.data.sources import open_image_set
from lst_fast.distributed import barrier, rank_and_world
from lst_fast.errors import DataError, InputError, TooFewSources
from lst_fast.evaluation import simplices as k_simplices
from lst_fast.evaluation.bootstrap import bootstrap_means, resample_counts
from lst_fast.evaluation.config import EvalConfig
from lst_fast.evaluation.cost import CSV_COLUMNS, cost_csv_cells, cost_latex, cost_markdown, walk_cost
from lst_fast.evaluation.limits import DIGITS_LIMIT, RESAMPLES_LIMIT, RESAMPLES_MINIMUM
from lst_fast.evaluation.memory_check import require_memory
from lst_fast.evaluation.pool import Pool, build_pool, classify, load_pool, scan_order
from lst_fast.evaluation.pool_file import SIGNED_SCAN
from lst_fast.evaluation.provenance import Provenance, short
from lst_fast.evaluation.runner import pool_config, run_evaluation
from lst_fast.evaluation.store import EvaluationStore, load_tensors
from lst_fast.evaluation.tables import SHOWN, latex_text, round_pairs, table2_per_source
from lst_fast.evaluation.targets import round_targets
from lst_fast.models.descriptor import ModelDescriptor
from lst_fast.run_environment import DEFAULT_ENVIRONMENT, RunEnvironment
from lst_fast.stage_times import timed_stage

__all__ = [
    "COLUMNS",
    "LEADERBOARD_DEFAULTS",
    "MIN_SHARED_SOURCES",
    "bootstrap_means",
    "model_folder",
    "pairing_problems",
    "rank_models",
    "run_leaderboard",
    "write_leaderboard",
]

# The paper's settings (its Tables 1 and 2): what `lst-fast leaderboard` defaults to.
LEADERBOARD_DEFAULTS = {"num_samples": 1000, "min_confidence": 0.6, "rounds": 5}
DEFAULT_RANK_BY = "frac_above_0.2"
# The fewest sources with a value that two models must share for one to rank above the other, and that a
# model must have to be ranked at all. Below 6, even a difference of the same sign on every shared source
# is not significant at 5% by the two-sided sign test (5 sources: 2 * 0.5**5 = 0.0625; 6: 0.031), while
# the bootstrap interval of a few equal differences shrinks to a point that excludes zero (2 sources:
# [1.000, 1.000]).
MIN_SHARED_SOURCES = 6
DROPS = (0.0, 0.1, 0.2, 0.3)

# Each column: (header, where it comes from, True when higher values rank first). The first rank goes to
# the larger blind spot: more of the triangle held above p_src - d, higher confidence, outputs closer to
# their targets (lower RMS / l_inf / LPIPS, higher SSIM).
COLUMNS: Dict[str, Tuple[str, str, bool]] = {
    "accuracy": ("accuracy (scanned)", "scan", True),
    "scan_confidence": ("mean p (scanned)", "scan", True),
    "rms": ("RMS", "table1", False),
    "linf": ("l_inf", "table1", False),
    "ssim": ("SSIM", "table1", True),
    "lpips": ("LPIPS", "table1", False),
    "confidence": ("final p", "table1", True),
    "still_source": ("still source", "table1", True),
    "mean": ("triangle mean p", "table2", True),
    **{f"frac_above_{d:g}": (f"> p_src - {d:g}" if d else "> p_src", "table2", True) for d in DROPS},
}
# tables.SHOWN without what the pool fixes for every model on it
SHOWN_SETTINGS = tuple((key, short) for key, short in SHOWN.items() if key not in ("data", "num_samples"))


def model_folder(spec: str) -> str:
    """The folder name of a model under OUT: its spec with every character but letters, digits, '.', '-'
    and '_' replaced, plus a short hash of the spec where anything was replaced (so names stay apart)."""
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", spec).strip("._") or "model"
    return safe if safe == spec else f"{safe}-{hashlib.sha256(spec.encode()).hexdigest()[:8]}"


# -- the run ----------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Ranking:
    """How the leaderboard ranks and prints: the column that ranks (rank_by), the bootstrap resamples of
    the sources and the decimals of the tables."""

    rank_by: str = DEFAULT_RANK_BY
    resamples: int = 1000
    digits: int = 3


@decoding_once  # one decoded copy of the images for the pool, scans, evaluations and LPIPS
def run_leaderboard(
    models: Sequence[str],
    data_spec: str,
    out,
    base: Optional[EvalConfig] = None,
    ranking: Ranking = Ranking(),
    simplices: Optional[k_simplices.SimplexSettings] = None,
    env: RunEnvironment = DEFAULT_ENVIRONMENT,
) -> Dict[str, Any]:
    """Build (or reuse) OUT/pool.json from `models` on the data set `data_spec`, evaluate each model on it into
    OUT/<model_folder(spec)>/ with `base`'s settings (its rounds, LST settings, seed, chunk size; the
    pool's size and bar are its num_samples and min_confidence; its model and data are replaced), then
    rank them and write the tables (rank 0). base: default the paper's settings (LEADERBOARD_DEFAULTS).
    simplices: also the k-simplices of every model (one column per k, rankable as simplex_kK). env: where
    and how it runs (lst_fast.run_environment). Each model is resolved once per call
    (lst_fast.models.resolve_model) for the pool, its scan and its evaluation (a resumed run resolves it
    again). Returns the leaderboard (the dict of leaderboard.json)."""
    rank_by, resamples, digits = ranking.rank_by, ranking.resamples, ranking.digits
    models = list(dict.fromkeys(models))
    if not models:
        raise InputError("a leaderboard needs at least one --model")
    if rank_by not in COLUMNS and not k_simplices.is_column(rank_by):
        raise InputError(f"rank_by must be one of {list(COLUMNS)} or simplex_kK (2 <= K <= rounds), got {rank_by!r}")
    if rank_by == "lpips" and _lpips_available() is not None:
        raise InputError(f"cannot rank by lpips: {_lpips_available()}")
    check_count("resamples", resamples, RESAMPLES_MINIMUM, RESAMPLES_LIMIT)
    check_count("digits", digits, 0, DIGITS_LIMIT)
    base = base or EvalConfig(**LEADERBOARD_DEFAULTS)
    if rank_by in COLUMNS and COLUMNS[rank_by][1] == "table2" and base.rounds < 2:
        raise InputError(
            f"--rank-by {rank_by} is a triangle statistic, which needs two rounds (a triangle is a source and "
            f"two LST outputs); --rounds is {base.rounds}: use --rounds 2 or more, or rank by a Table 1 column "
            "(e.g. --rank-by confidence)"
        )
    if simplices is not None:
        simplices.validate(base.rounds)
        simplices.check_memory(base.rounds, base.num_samples)
    if k_simplices.is_column(rank_by) and (simplices is None or int(rank_by[len("simplex_k") :]) > base.rounds):
        raise InputError(f"rank_by {rank_by} needs --simplex-points and a k of at most --rounds ({base.rounds})")
    base.validate()
    folders = [model_folder(m) for m in models]
    if len(set(folders)) != len(folders):
        raise InputError(f"two models share a folder name: {models}")
    out = Path(out)
    rank, world = rank_and_world()
    resolved: Dict[str, ModelDescriptor] = {}  # spec -> the model, resolved once for this command
    with EvaluationStore(out).locked() if rank == 0 else contextlib.nullcontext():
        if rank == 0:
            for stale in out.glob(".*.tmp"):  # a killed write of pool.json (only under the lock)
                stale.unlink(missing_ok=True)
            pool = _pool(models, data_spec, out, base, env=env, resolved=resolved)
            check_bootstrap_memory(resamples, len(pool), int(pool.scan["scanned"]))  # before any evaluation
        barrier(world)
        pool = load_pool(out / "pool.json") if rank != 0 else pool
        for spec, folder in zip(models, folders, strict=True):
            if rank == 0:
                print(f"== {spec} -> {out / folder}", flush=True)
                _scan(spec, data_spec, base, pool, folder=out / folder, env=env, resolved=resolved)
            barrier(world)
            cfg = pool_config(base.replace(model=spec, data=data_spec), pool)
            try:
                run_evaluation(cfg, out / folder, env, pool=pool, simplices=simplices, model=resolved.get(spec))
                if rank == 0:
                    (out / folder / NO_SOURCES).unlink(missing_ok=True)
            except TooFewSources as error:  # its row says so; the other models are still ranked
                if rank == 0:
                    print(f"{spec}: not evaluated: {error}", flush=True)
                    _write_no_sources(out / folder, spec, pool, str(error))
        board: Dict[str, Any] = {}
        if rank == 0:
            board = write_leaderboard(out, models, ranking, env, resolved=resolved)
        barrier(world)
    return board


@timed_stage("pool")
def _pool(
    specs: Sequence[str],
    data_spec: str,
    out: Path,
    base: EvalConfig,
    env: RunEnvironment,
    resolved: Dict[str, ModelDescriptor],
) -> Pool:
    """OUT/pool.json: reused when it is of this data set and these settings, refused when it is not,
    built from every listed model when it is missing (the models it resolves go into `resolved`)."""
    path = out / "pool.json"
    wanted = {k: getattr(base, k) for k in ("num_samples", "min_confidence", "seed", "rounds")}
    if path.is_file():
        pool = load_pool(path)
        pool.check_data(open_image_set(data_spec, env.data_root), data_spec, str(path), env.data_root)
        differ = {k: (pool.settings()[k], v) for k, v in wanted.items() if pool.settings()[k] != v}
        if differ:
            raise InputError(
                f"{path} was built with other settings (theirs vs ours: {differ}); use another --out or the "
                "pool's settings"
            )
        later = [m for m in specs if m not in pool.makers]
        print(
            f"pool {path}: {len(pool)} images, reused (made by {', '.join(pool.makers)}"
            + (f"; {', '.join(later)} evaluated on the part of it they classify correctly)" if later else ")"),
            flush=True,
        )
        return pool
    models = [{"model": m, "pretrained": base.pretrained} for m in specs]
    pool, stats = build_pool(
        models,
        data_spec,
        base.num_samples,
        base.min_confidence,
        seed=base.seed,
        rounds=base.rounds,
        env=env,
        resolved=resolved,
    )
    if len(pool) < 2:
        raise InputError(f"only {len(pool)} images of {data_spec} qualify for the pool of {specs}; need at least 2")
    _refuse_other_pools(out, pool, specs)
    pool.save(path)
    rate = stats.scanned / stats.seconds if stats.seconds > 0 else float("inf")
    print(
        f"pool {path}: {len(pool)} images from {stats.scanned} of {stats.size} scanned "
        f"({'full' if stats.filled else 'the whole data set: fewer than asked'}); forwards "
        + ", ".join(f"{k} {v}" for k, v in stats.forwards.items())
        + f"; {stats.seconds:.1f} s ({rate:.0f} images/s)",
        flush=True,
    )
    return pool


def _refuse_other_pools(out: Path, pool: Pool, specs: Sequence[str]) -> None:
    """DataError before a new pool.json is written when OUT already holds evaluations on another pool (its
    pool.json was deleted, and the pool built now from `specs` is another one): their rows could not be
    ranked with the new pool's, and resuming them would mix two pools. The same pool built again (the same
    models, data and settings) is the pool they ran on, and goes on."""
    others: Dict[str, List[str]] = {}
    for config in sorted(out.glob("*/config.json")):
        try:
            found = json.loads(config.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError):
            continue  # not an evaluation of a pool; the run of that folder names its problem
        digest = found.get("pool") if isinstance(found, dict) else None
        if isinstance(digest, str) and digest != pool.digest:
            others.setdefault(digest, []).append(str(found.get("model", config.parent.name)))
    if others:
        digest, models = next(iter(others.items()))
        raise DataError(
            f"{out / 'pool.json'} is missing, and {out} holds evaluations on another pool ({digest[:12]}: "
            f"{', '.join(models)}) than the one {', '.join(specs)} make now ({pool.digest[:12]}): restore that "
            "pool.json, or use another --out (nothing was written)"
        )


@timed_stage("scan")
def _scan(
    spec: str,
    data_spec: str,
    base: EvalConfig,
    pool: Pool,
    folder: Path,
    env: RunEnvironment,
    resolved: Dict[str, ModelDescriptor],
) -> None:
    """OUT/<model>/scan.json: the model's prediction and confidence on every image the pool's scan looked
    at (the first `scanned` images of its seeded order), unless it is there for this pool."""
    from lst_fast.models import resolve_model

    path = folder / "scan.json"
    if path.is_file():
        try:
            found = json.loads(path.read_text())
            if found.get("pool") == pool.digest and found.get("model") == spec:
                return
        except (json.JSONDecodeError, UnicodeDecodeError, AttributeError):
            pass
    described = resolved.get(spec)
    if described is None:
        described = resolved[spec] = resolve_model(
            spec, env.device, pretrained=base.pretrained, model_dir=env.model_dir
        )
    data = open_image_set(data_spec, env.data_root, described.preprocessing)
    pool.check_data(data, data_spec, data_root=env.data_root, preprocessing=described.preprocessing)
    scanned = scan_order(len(data), pool.seed)[: int(pool.scan["scanned"])]
    predicted, confidence = classify(described.classifier(), data, scanned, env, desc=f"scan {spec}", name=spec)
    correct = predicted == data.labels[scanned]
    record = {
        "model": spec,
        "pool": pool.digest,
        "scanned": len(scanned),
        "accuracy": float(correct.double().mean()),
        "correct": correct.int().tolist(),
        "confidence": confidence.tolist(),
    }
    atomic_write_text(path, standard_json(record) + "\n")


# -- the numbers ------------------------------------------------------------------------------------------


def check_bootstrap_memory(resamples: int, pool_size: int, scanned: int) -> None:
    """EnvironmentFault (one line, the size) when the resample counts do not fit this machine's memory: the
    pool's and the scan's (resamples x positions, float64) and, while one is made, its index (int64) and
    ones (float64)."""
    require_memory(
        8 * resamples * (pool_size + scanned) + 16 * resamples * max(pool_size, scanned),
        f"--resamples {resamples} over {pool_size} pool images and {scanned} scanned",
        "lower --resamples",
    )


def _interval(values: Tensor, weights: Tensor) -> List[Dict[str, float]]:
    """Per row: the mean over the positions it has and the 95% percentile interval of its resamples."""
    means = bootstrap_means(values, torch.ones(1, values.shape[1], dtype=torch.float64))[0]
    boots = bootstrap_means(values, weights)
    low = torch.nanquantile(boots, 0.025, dim=0)
    high = torch.nanquantile(boots, 0.975, dim=0)
    return [{"mean": float(m), "low": float(lo), "high": float(hi)} for m, lo, hi in zip(means, low, high, strict=True)]


def paired_difference(values: Tensor, weights: Tensor, a: int, b: int) -> Tensor:
    """(B,) resampled means of the per-source difference values[a] - values[b] over the sources both
    models have (NaN for a resample that holds none of them): the paired bootstrap of a - b."""
    diff = (values[a].double() - values[b].double()).unsqueeze(0)
    return bootstrap_means(diff, weights)[:, 0]


def rank_models(
    values: Tensor, weights: Tensor, higher_first: bool, min_shared: int = MIN_SHARED_SOURCES
) -> Tuple[List[Optional[int]], List[List[int]]]:
    """(rank per model, the models ranked above each) from per-source values (M, P; NaN where a model has
    no value) under the resamples `weights` (B, P): model a is above b when the 95% percentile interval of
    their paired difference a - b (b - a when lower ranks first), on the sources both have, excludes zero,
    and they share at least `min_shared` sources. A model with fewer than `min_shared` values gets no rank
    (None) and ranks no one."""
    sign = 1.0 if higher_first else -1.0
    m = values.shape[0]
    present = ~values.isnan()
    has = [int(present[k].sum()) >= min_shared for k in range(m)]
    above: List[List[int]] = [[] for _ in range(m)]
    for a in range(m):
        for b in range(m):
            if a != b and has[a] and has[b] and int((present[a] & present[b]).sum()) >= min_shared:
                diff = sign * paired_difference(values, weights, a, b)
                diff = diff[~diff.isnan()]
                if diff.numel() and float(torch.quantile(diff, 0.025)) > 0:
                    above[b].append(a)
    return [1 + len(above[k]) if has[k] else None for k in range(m)], above


def pairing_problems(rounds: Sequence[Dict[str, Tensor]], pool: Pool) -> List[str]:
    """What keeps an evaluation's results (its rounds' chunks, concatenated) from being paired with every
    other model's on `pool`, read from the files themselves: the same sources in every round, each in the
    pool, and in every round of the pool's the pool's target for each source. Empty when paired."""
    if len(rounds) != pool.rounds:
        return [f"{len(rounds)} rounds, the pool's {pool.rounds}"]
    where = {int(i): k for k, i in enumerate(pool.indices.tolist())}
    source = rounds[0]["source"]
    outside = [int(i) for i in source.tolist() if int(i) not in where]
    if outside:
        return [f"source {outside[0]} is not in the pool"]
    position = torch.tensor([where[int(i)] for i in source.tolist()], dtype=torch.long)
    problems = []
    for r, (found, wanted) in enumerate(zip(rounds, round_targets(pool.labels, pool.rounds, pool.seed), strict=True)):
        if not torch.equal(found["source"], source):
            problems.append(f"round {r} has other sources than round 0")
        elif not torch.equal(found["target"], pool.indices[wanted[position]]):
            wrong = int((found["target"] != pool.indices[wanted[position]]).sum())
            problems.append(f"round {r}: {wrong} of {len(source)} targets are not the pool's")
    return problems


def pixel_problems(provenance: Optional[Provenance], pool: Pool) -> List[str]:
    """Why an evaluation's recorded pixels (OUT/provenance.json) are not the pool's: the digest of the
    pool's images must be the pool's own. Empty when they are, or when the folder records none (written by
    an earlier lst_fast: its row records no digests)."""
    if provenance is None:
        return []
    if provenance.pixel_indices != tuple(pool.indices.tolist()):
        return ["its recorded pixels are of other images than the pool's"]
    if provenance.pixels_sha256 != pool.data["pixels_sha256"]:
        return [
            f"it walked other pixels than the pool's (data digest {short(provenance.pixels_sha256)}, the pool's "
            f"{short(pool.data['pixels_sha256'])})"
        ]
    return []


def _per_source(folder: Path, pool: Pool, lpips: bool) -> Tuple[Dict[str, Tensor], int]:
    """Each column's value per pool position (NaN where the model has no source) from an evaluation
    folder: Table 1 averaged over the source's rounds, Table 2 per source; and its number of sources.
    DataError when its files are not paired with the pool's sources and targets (pairing_problems)."""
    store = EvaluationStore(folder)
    cfg = store.read_config()
    tables = store.read_tables()  # checked: a truncated or edited tables.json is one line naming it
    sources = int(tables["sources"])
    chunks = math.ceil(sources / cfg.chunk_size)
    rounds = [store.read_round(r, chunks) for r in range(cfg.rounds)]
    problems = pairing_problems(rounds, pool) + pixel_problems(store.read_provenance(), pool)
    if problems:
        raise DataError(
            f"{folder} is not paired with the pool {pool.digest[:12]} ({'; '.join(problems)}): its results cannot "
            "be ranked with the others; delete the folder and run the leaderboard again"
        )
    position = pool.positions(rounds[0]["source"], str(folder))
    out: Dict[str, Tensor] = {}

    def place(per_source: Tensor) -> Tensor:
        full = torch.full((len(pool),), float("nan"), dtype=torch.float64)
        full[position] = per_source.double()
        return full

    keys = ["rms", "linf", "ssim", "confidence", "still_source"]
    for key in keys:
        out[key] = place(torch.stack([r[key].double() for r in rounds]).nanmean(0))
    if lpips:
        lp = load_tensors(folder / "lpips.safetensors")["lpips"].double()  # (rounds, sources)
        out["lpips"] = place(lp.nanmean(0))
    triangles = [store.read_triangles(r1, r2) for r1, r2 in round_pairs(cfg.rounds)]
    t2 = table2_per_source(triangles, cfg.triangle_n, sources)
    for key in ["mean"] + [f"frac_above_{d:g}" for d in DROPS]:
        out[key] = place(t2[key]) if t2[key].numel() else place(torch.full((sources,), float("nan")))
    out.update({key: place(v) for key, v in k_simplices.leaderboard_values(store, cfg, tables).items()})
    return out, sources


@timed_stage("lpips")
def _lpips_files(
    spec: str, folder: Path, pool: Pool, env: RunEnvironment, resolved: Dict[str, ModelDescriptor]
) -> Optional[str]:
    """Write OUT/<model>/lpips.safetensors (LPIPS of each LST output to its target, per round) where
    missing; return why LPIPS is left out, or None. The model resolved is `spec`, the one the command
    names, never one the folder's config.json names (a folder's file must not choose code to import)."""
    from lst_fast.atomic_files import atomic_save_tensors
    from lst_fast.metrics import lpips_distance
    from lst_fast.models import resolve_model

    path = folder / "lpips.safetensors"
    if path.is_file():
        return None
    store = EvaluationStore(folder)
    cfg = store.read_config()
    sources = int(store.read_tables()["sources"])
    chunks = math.ceil(sources / cfg.chunk_size)
    if cfg.model != spec:
        raise DataError(
            f"{store.config_path} is of the model {cfg.model}, not {spec}: delete the folder and run the "
            "leaderboard again"
        )
    described = resolved.get(spec)
    if described is None:
        described = resolved[spec] = resolve_model(spec, env.device, pretrained=cfg.pretrained, model_dir=env.model_dir)
    data, device = open_image_set(cfg.data, env.data_root, described.preprocessing), env.device
    rows = []
    try:
        for r in range(cfg.rounds):
            values = []
            for c in range(chunks):
                chunk = store.read_chunk(r, c)
                target = data.get(chunk["target"]).to(device)
                values.append(lpips_distance(chunk["images"].to(device), target).double().cpu())
            rows.append(torch.cat(values))
    except RuntimeError as error:
        return " ".join(str(error).split())
    atomic_save_tensors({"lpips": torch.stack(rows)}, path)
    return None


def _lpips_available() -> Optional[str]:
    try:
        import lpips  # noqa: F401
    except ImportError:
        return "the lpips package is not installed (pip install lpips)"
    return None


NO_SOURCES = "no_sources.json"  # OUT/<model>/no_sources.json: why the model has no row of numbers


def _write_no_sources(folder: Path, spec: str, pool: Pool, why: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write_text(folder / NO_SOURCES, standard_json({"model": spec, "pool": pool.digest, "why": why}) + "\n")


def _no_sources(folder: Path, pool: Pool) -> Optional[str]:
    """Why the model of `folder` has no sources in `pool` (None when it has some)."""
    path = folder / NO_SOURCES
    if not path.is_file():
        return None
    try:
        found = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None
    if not isinstance(found, dict) or found.get("pool") != pool.digest:
        return None
    return str(found.get("why", "no sources"))


@timed_stage("tables")
def write_leaderboard(
    out,
    models: Sequence[str],
    ranking: Ranking = Ranking(),
    env: RunEnvironment = DEFAULT_ENVIRONMENT,
    resolved: Optional[Dict[str, ModelDescriptor]] = None,
) -> Dict[str, Any]:
    """Rank the finished evaluations of `models` under OUT on OUT/pool.json and write
    OUT/leaderboard.{md,tex,csv,json} and OUT/leaderboard.png, all from one ranking: every file is
    rendered before any is written. Returns the leaderboard dict. resolved: spec -> the models the
    caller already resolved (LPIPS, where missing, reads the targets in the model's preprocessing)."""
    rank_by, resamples, digits = ranking.rank_by, ranking.resamples, ranking.digits
    resolved = {} if resolved is None else resolved
    out = Path(out)
    pool = load_pool(out / "pool.json")
    check_bootstrap_memory(resamples, len(pool), int(pool.scan["scanned"]))
    lpips_missing = _lpips_available()
    rows: List[Dict[str, Any]] = []
    per_model: List[Dict[str, Tensor]] = []
    scans: List[Dict[str, Tensor]] = []
    nothing = torch.full((len(pool),), math.nan, dtype=torch.float64)
    for spec in models:
        folder = out / model_folder(spec)
        scan = json.loads((folder / "scan.json").read_text())
        if scan.get("pool") != pool.digest:
            raise DataError(f"{folder / 'scan.json'} is of another pool; delete it and run the leaderboard again")
        scans.append(
            {
                "accuracy": torch.tensor(scan["correct"], dtype=torch.float64),
                "scan_confidence": torch.tensor(scan["confidence"], dtype=torch.float64),
            }
        )
        why = _no_sources(folder, pool)
        if why is not None:
            per_model.append({key: nothing for key in COLUMNS})
            rows.append({"model": spec, "folder": str(folder), "sources": 0, "config": {}, "note": why})
            continue
        EvaluationStore(folder).require_finished()
        if lpips_missing is None:
            lpips_missing = _lpips_files(spec, folder, pool, env, resolved)
        values, sources = _per_source(folder, pool, lpips_missing is None)
        per_model.append(values)
        cfg, provenance = EvaluationStore(folder).read_config(), EvaluationStore(folder).read_provenance()
        rows.append(
            {
                "model": spec,
                "folder": str(folder),
                "sources": sources,
                "config": cfg.to_dict(),
                "provenance": None if provenance is None else provenance.digests(),
                "cost": walk_cost(folder, cfg.rounds, math.ceil(sources / cfg.chunk_size)),
            }
        )
    # the k-simplex columns that every model has (an evaluation without them has none)
    # (a model with no sources has no files to say; its cells are n/a)
    measured = [v for v, row in zip(per_model, rows, strict=True) if row["sources"]] or per_model
    ks = sorted(set.intersection(*(set(k_simplices.board_ks({"columns": v})) for v in measured)))
    info = {**COLUMNS, **k_simplices.leaderboard_columns(ks)}
    for v in per_model:
        for key in info:
            v.setdefault(key, nothing)
    if rank_by not in info:
        raise InputError(f"cannot rank by {rank_by}: not every model's evaluation has it (run with --simplex-points)")
    columns = [c for c in info if c != "lpips" or lpips_missing is None]
    pool_counts = resample_counts(len(pool), resamples, pool.seed)
    scanned = len(scans[0]["accuracy"])
    scan_counts = resample_counts(scanned, resamples, pool.seed + 1)
    ranked_on: Tuple[Tensor, Tensor] = (nothing.unsqueeze(0), pool_counts)
    for key in columns:
        if info[key][1] == "scan":
            values, weights = torch.stack([s[key] for s in scans]), scan_counts
        else:
            values, weights = torch.stack([v[key] for v in per_model]), pool_counts
        for row, cell in zip(rows, _interval(values, weights), strict=True):
            row.setdefault("values", {})[key] = cell
        if key == rank_by:
            ranked_on = (values, weights)
    ranks, above = rank_models(*ranked_on, info[rank_by][2])
    with_value = (~ranked_on[0].isnan()).sum(1).tolist() if ranked_on[0].shape[0] == len(rows) else [0] * len(rows)
    for k, row in enumerate(rows):
        row["rank"] = ranks[k]
        row["ranked_below"] = [models[a] for a in above[k]]
        row["sources_with_value"] = int(with_value[k]) if row["sources"] else 0
        row["too_few_sources"] = bool(row["sources"]) and with_value[k] < MIN_SHARED_SOURCES
        if row["too_few_sources"]:
            row["note"] = (
                f"{with_value[k]} of its {row['sources']} sources have a value of {info[rank_by][0]}; a rank needs "
                f"at least {MIN_SHARED_SOURCES}"
            )
    sign = 1.0 if info[rank_by][2] else -1.0
    last = len(rows) + 1  # unranked rows go last

    def place(k: int) -> Tuple[int, float]:
        return (ranks[k] or last, -sign * _or_inf(rows[k]["values"][rank_by]["mean"]))

    order = sorted(range(len(rows)), key=place)
    rows = [rows[k] for k in order]
    for row in rows:
        if row["rank"] is None:
            row["rank_label"] = "-"
        else:
            row["rank_label"] = f"{row['rank']}=" if ranks.count(row["rank"]) > 1 else str(row["rank"])
    board = {
        "pool": {
            "file": str(out / "pool.json"),
            "digest": pool.digest,
            "size": len(pool),
            "data": pool.data,
            "makers": pool.makers,
            "settings": pool.settings(),
            "scan": {k: pool.scan[k] for k in SIGNED_SCAN},
        },
        "rank_by": rank_by,
        "ranked": any(r is not None for r in ranks),
        "min_shared_sources": MIN_SHARED_SOURCES,
        "higher_first": {k: info[k][2] for k in columns},
        "resamples": resamples,
        "columns": {k: info[k][0] for k in columns},
        "lpips": "included" if lpips_missing is None else f"omitted: {lpips_missing}",
        "rows": rows,
    }
    # Every model's verdict on every model's LST outputs (lst_fast.evaluation.verdicts), in rank order.
    from lst_fast.evaluation import verdict_tables, verdicts

    measured = {s: out / model_folder(s) for s in models if _no_sources(out / model_folder(s), pool) is None}
    still = {s: v["still_source"] for s, v in zip(models, per_model, strict=True)}
    board["verdicts"] = matrix = verdicts.board_verdicts(
        out,
        [r["model"] for r in rows],
        measured,
        pool,
        weights=pool_counts,
        env=env,
        resolved=resolved,
        still_source=still,
    )
    texts = {
        "leaderboard.json": standard_json(board, indent=1) + "\n",
        "leaderboard.md": leaderboard_markdown(board, digits) + "\n" + verdict_tables.verdict_markdown(matrix, digits),
        "leaderboard.tex": leaderboard_latex(board, digits) + "\n" + verdict_tables.verdict_latex(matrix, digits),
        "leaderboard.csv": leaderboard_csv(board),
        "leaderboard_verdicts.csv": verdict_tables.verdict_csv(matrix),
    }
    leaderboard_figure(board, out / "leaderboard.png")
    verdict_tables.verdict_figure(matrix, out / "leaderboard_verdicts.png")
    for name, text in texts.items():
        atomic_write_text(out / name, text)
    return board


def _or_inf(value: float) -> float:
    return value if value == value else -math.inf


# -- the text ---------------------------------------------------------------------------------------------


def _settings(config: Dict[str, Any]) -> str:
    return ", ".join(f"{short}={_fmt(config.get(key))}" for key, short in SHOWN_SETTINGS)


def _fmt(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def caption(board: Dict[str, Any]) -> str:
    pool = board["pool"]
    mc = pool["settings"]["min_confidence"]
    bar = "" if mc is None else f" with confidence above {mc:g}"
    scan = pool["scan"]
    direction = "highest" if board["higher_first"][board["rank_by"]] else "lowest"
    return (
        f"One shared pool of {pool['size']} {pool['data']['spec']} images (digest {pool['digest'][:12]}): the "
        f"first images of a seeded random order ({scan.get('scanned')} of {pool['data']['size']} scanned) that "
        f"{', '.join(pool['makers'])} all classify correctly{bar}; a model not among those is evaluated on the "
        "pool's images it classifies correctly (its sources). Every model walks the same sources toward the "
        "same targets, so the comparison is paired. Cells: mean [95% bootstrap interval over source images, "
        f"{board['resamples']} resamples, the same for every model]; accuracy and mean p over the scanned "
        "images. Table 1 columns (RMS, l_inf, SSIM, final p, still source) average each source's rounds; "
        f"Table 2 columns are over triangles (source, two LST outputs){_grid_text(board)}; > p_src - d is the "
        f"fraction of the triangle with confidence above p_src - d. {_ranking_text(board, direction)} "
        f"LPIPS: {board['lpips']}." + k_simplices.caption(board)
    )


def _grid_text(board: Dict[str, Any]) -> str:
    """The triangle grid the Table 2 columns were measured on (one for every model: the leaderboard's)."""
    grids = {row["config"]["triangle_n"] for row in board["rows"] if "triangle_n" in row.get("config", {})}
    if len(grids) != 1:
        return ""
    n = grids.pop()
    return f", each on a grid of {(n + 1) * (n + 2) // 2} points (n + 1 on each edge, n = {n})"


def _ranking_text(board: Dict[str, Any], direction: str) -> str:
    column = board["columns"][board["rank_by"]]
    if not board.get("ranked", True):
        return f"Not ranked: {column} has no value for any model."
    unranked = [f"`{r['model']}` ({r.get('note', 'no value')})" for r in board["rows"] if r["rank"] is None]
    minimum = board.get("min_shared_sources", 1)
    return (
        f"Ranked by {column} ({direction} first): a model ranks above another only when the 95% interval of "
        f"their paired difference, on the sources both have (at least {minimum} with a value; a NaN "
        "confidence is no value, shown n/a), excludes zero; rank = 1 + the number of models above it, and "
        f"'k=' marks a shared rank; '(too few)' marks a model with fewer than {minimum} sources and '(K with a "
        f"value)' one with fewer than {minimum} that have a value: neither is ranked."
        + (f" Not ranked ('-'): {', '.join(unranked)}." if unranked else "")
    )


def _cell(value: Dict[str, float], digits: int) -> str:
    if value["mean"] is None or value["mean"] != value["mean"]:
        return "n/a"
    return f"{value['mean']:.{digits}f} [{value['low']:.{digits}f}, {value['high']:.{digits}f}]"


def _too_few(row: Dict[str, Any]) -> str:
    """The mark beside the sources of a row under the minimum of sources with a value (not ranked): "(too
    few)", or "(K with a value)" when it has enough sources but NaN confidences on some."""
    if not row.get("too_few_sources"):
        return ""
    return " (too few)" if row["sources"] < MIN_SHARED_SOURCES else f" ({row['sources_with_value']} with a value)"


def leaderboard_markdown(board: Dict[str, Any], digits: int = 3) -> str:
    headers = list(board["columns"].values())
    lines = [
        "# lst-fast leaderboard",
        "",
        caption(board),
        "",
        "| rank | model | "
        + " | ".join(headers[:2])
        + " | sources / pool | "
        + " | ".join(headers[2:])
        + " | settings |",
        "|---|---|" + "---|" * (len(headers) + 2),
    ]
    for row in board["rows"]:
        cells = [_cell(row["values"][k], digits) for k in board["columns"]]
        lines.append(
            f"| {row['rank_label']} | `{row['model']}` | {' | '.join(cells[:2])} | "
            f"{row['sources']} / {board['pool']['size']}{_too_few(row)} | {' | '.join(cells[2:])} | "
            f"{_settings(row['config'])} |"
        )
    return "\n".join(lines) + "\n\n" + cost_markdown(board["rows"])


def leaderboard_latex(board: Dict[str, Any], digits: int = 3) -> str:
    headers = list(board["columns"].values())
    lines = [
        "% " + caption(board),
        "% needs \\usepackage{booktabs}",
        r"\begin{tabular}{ll" + "c" * 2 + "r" + "c" * (len(headers) - 2) + "l}",
        r"\toprule",
        "rank & model & "
        + " & ".join(latex_text(h) for h in headers[:2])
        + r" & sources & "
        + " & ".join(latex_text(h) for h in headers[2:])
        + r" & settings \\",
        r"\midrule",
    ]
    for row in board["rows"]:
        cells = []
        for key in board["columns"]:
            v = row["values"][key]
            cells.append(
                "n/a"
                if v["mean"] is None or v["mean"] != v["mean"]
                else f"${v['mean']:.{digits}f}$ [{v['low']:.{digits}f}, {v['high']:.{digits}f}]"
            )
        lines.append(
            f"{latex_text(row['rank_label'])} & \\texttt{{{latex_text(row['model'])}}} & {' & '.join(cells[:2])} & "
            f"{row['sources']}/{board['pool']['size']}{_too_few(row)} & {' & '.join(cells[2:])} & "
            f"{latex_text(_settings(row['config']))} \\\\"
        )
    lines += [r"\bottomrule", r"\end{tabular}"]
    return "\n".join(lines) + "\n\n" + cost_latex(board["rows"])


def leaderboard_csv(board: Dict[str, Any]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    keys = list(board["columns"])
    writer.writerow(
        ["rank", "model", "sources", "pool"]
        + [f"{k}_{part}" for k in keys for part in ("mean", "low", "high")]
        + [name for _, name in SHOWN_SETTINGS]
        + ["note"]
        + list(CSV_COLUMNS)
    )
    for row in board["rows"]:
        writer.writerow(
            [row["rank_label"], row["model"], row["sources"], board["pool"]["size"]]
            + [repr(row["values"][k][part]) for k in keys for part in ("mean", "low", "high")]
            + [_fmt(row["config"].get(key)) for key, _ in SHOWN_SETTINGS]
            + [row.get("note", "")]
            + cost_csv_cells(row.get("cost"))
        )
    return buffer.getvalue()


def leaderboard_figure(board: Dict[str, Any], path: Path) -> Path:
    """Left: the ranking column per model with its 95% interval, in rank order. Middle: the fraction of the
    triangle above p_src - d for each d, per model, with its interval. Right, when the leaderboard has
    k-simplex columns: their fraction against k, per model, with its interval."""
    plt = plots.pyplot()
    rows = board["rows"]
    key = board["rank_by"]
    by_k = bool(k_simplices.board_ks(board))
    fig, axes = plt.subplots(1, 2 + by_k, figsize=(10 + 4.5 * by_k, max(3.2, 0.45 * len(rows) + 1.5)))
    left, right = axes[0], axes[1]
    if by_k:
        k_simplices.draw_by_k(axes[2], board)
    y = list(range(len(rows)))[::-1]
    mean = [r["values"][key]["mean"] for r in rows]
    err = [
        [max(0.0, r["values"][key]["mean"] - r["values"][key]["low"]) for r in rows],
        [max(0.0, r["values"][key]["high"] - r["values"][key]["mean"]) for r in rows],
    ]
    left.errorbar(mean, y, xerr=err, fmt="o", capsize=4, color="tab:blue")
    left.set_ylim(-0.6, len(rows) - 0.4)
    left.set_yticks(y)
    left.set_yticklabels([f"{r['rank_label']}  {r['model']}" for r in rows], fontsize=8)
    left.set_xlabel(f"{board['columns'][key]} (mean, 95% bootstrap interval)")
    left.set_title(f"ranked by {board['columns'][key]}", fontsize=9)
    fractions = [f"frac_above_{d:g}" for d in DROPS]
    for k, row in enumerate(rows):
        values = [row["values"][f] for f in fractions]
        shift = (k - (len(rows) - 1) / 2) * 0.008
        right.errorbar(
            [d + shift for d in DROPS],
            [v["mean"] for v in values],
            yerr=[[max(0.0, v["mean"] - v["low"]) for v in values], [max(0.0, v["high"] - v["mean"]) for v in values]],
            marker="o",
            capsize=3,
            label=row["model"],
        )
    right.set_xticks(list(DROPS))
    right.set_xlabel("d: fraction of the triangle with p > p_src - d")
    right.set_ylabel("fraction (mean, 95% interval)")
    right.set_ylim(0, 1.05)
    right.legend(fontsize=8, loc="lower right")
    fig.suptitle(
        f"blind-spot leaderboard: {board['pool']['size']} shared sources of {board['pool']['data']['spec']}", fontsize=9
    )
    fig.tight_layout()
    return plots.save_figure(fig, path)
