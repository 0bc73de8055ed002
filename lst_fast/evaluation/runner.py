"""Running the full evaluation (docs/ALGORITHM.md section 3): Table 1 (distances from LST outputs to their
targets) and Table 2 (triangle statistics) over a pool of correctly classified images, R rounds of targets.

The pool is the model's own (`own_pool_indices`: a seeded scan that stops when the pool is full), or a shared
one (`pool=`, lst_fast.evaluation.pool): the model is then evaluated on the part of the shared pool it
classifies correctly (above the pool's min_confidence), and each source keeps the target the shared pool
gives it in every round (`round_targets` of the whole pool and the seed), so every model on the pool walks
the same pairs.

Results are written chunk by chunk through the evaluation's store (EvaluationStore); a run restarted with
the same configuration skips finished chunks and ends with the same tables. Under torchrun (an initialized
torch.distributed group) each rank takes every world_size-th chunk and triangle set; every chunk is
seeded by its position alone, so K processes produce exactly the tables of one.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import time
from typing import Callable, Dict, Iterator, List, Optional, Sequence, Tuple, TypeVar

import torch
from torch import Tensor

from lst_fast.caller_warning import warn_at_caller
from lst_fast.data.decoded import decoding_once
from lst_fast.data.image_cache import cached_images
from lst_fast.data.image_set import ImageSet
from lst_fast.data.preprocessing import Preprocessing
from lst_fast.data.sources import open_image_set
from lst_fast.distributed import barrier, rank_and_world
from lst_fast.errors import InputError, TooFewSources
from lst_fast.evaluation import tables as paper_tables
from lst_fast.evaluation.config import EvalConfig
from lst_fast.evaluation.cost import WalkCost
from lst_fast.evaluation.pool import Pool, PoolMember, classify, pixels_digest, select_pool
from lst_fast.evaluation.provenance import Provenance, refuse_changes, weights_digest
from lst_fast.evaluation.simplices import SimplexSettings, compute_simplices, simplex_markdown, simplex_tables
from lst_fast.evaluation.store import EvaluationStore
from lst_fast.evaluation.targets import round_targets
from lst_fast.geometry import triangle_confidence, triangle_weights
from lst_fast.metrics import distances
from lst_fast.models.descriptor import ModelDescriptor
from lst_fast.run_environment import DEFAULT_ENVIRONMENT, RunEnvironment
from lst_fast.stage_times import timed_stage
from lst_fast.walk.traversal import traverse

__all__ = [
    "chunk_seed",
    "own_pool_indices",
    "pool_config",
    "pool_conflicts",
    "run_evaluation",
    "staged_on_device",
]

Job = TypeVar("Job")


@timed_stage("pool")
def own_pool_indices(model: torch.nn.Module, data: ImageSet, cfg: EvalConfig, env: RunEnvironment) -> Tensor:
    """Indices (sorted) of the model's own pool: the shared pool's scan (`select_pool`) with this one model,
    the first num_samples images of the seeded order that it classifies correctly (confidence above
    min_confidence if set), the scan stopping as soon as the pool is full."""
    member = PoolMember(cfg.model, model, data)
    quiet = env.replace(progress=False)
    indices, _, _ = select_pool([member], cfg.num_samples, cfg.min_confidence, cfg.seed, env=quiet)
    return indices.sort().values


@dataclasses.dataclass
class _Work:
    """What every step of one evaluation shares."""

    cfg: EvalConfig
    store: EvaluationStore
    device: torch.device
    rank: int
    world: int
    model: torch.nn.Module
    data: ImageSet
    sources: Tensor  # dataset indices of the sources
    targets: List[Tensor]  # per round: dataset index of each source's target
    provenance: Optional[Provenance] = None  # the weights and pixels it walks, by digest

    @property
    def chunks(self) -> int:
        return math.ceil(len(self.sources) / self.cfg.chunk_size)

    def chunk_rows(self, round_: int, chunk: int) -> Tuple[Tensor, Tensor]:
        """Dataset indices of the chunk's sources and of their targets."""
        rows = torch.arange(chunk * self.cfg.chunk_size, min((chunk + 1) * self.cfg.chunk_size, len(self.sources)))
        return self.sources[rows], self.targets[round_][rows]


# What a run on a shared pool takes from the pool: everything that decides its sources and targets.
POOL_DECIDES = ("data", "num_samples", "min_confidence", "seed", "rounds")


def pool_config(cfg: EvalConfig, pool: Pool) -> EvalConfig:
    """cfg for a run on the shared `pool`: its digest, its size, its min_confidence, and the seed and rounds
    that decide every source's targets (so every model on the pool walks the same pairs)."""
    return cfg.replace(
        pool=pool.digest,
        num_samples=max(1, len(pool)),
        min_confidence=pool.min_confidence,
        seed=pool.seed,
        rounds=pool.rounds,
    )


def pool_conflicts(given: Dict[str, object], pool: Pool) -> List[str]:
    """The settings in `given` (flag values the user gave) that differ from what `pool` decides, as
    'name X (the pool: Y)'; the data set is compared by kind (a folder may move)."""
    decided = {**pool.settings(), "num_samples": len(pool), "data": pool.data["spec"]}
    problems = []
    for name, value in given.items():
        if name not in POOL_DECIDES or value is None:
            continue
        theirs = decided[name]
        same = value.partition(":")[0] == pool.data["kind"] if name == "data" else value == theirs
        if not same:
            problems.append(f"{name} {value} (the pool: {theirs})")
    return problems


def chunk_seed(seed: int, round_: int, chunk: int) -> int:
    """The seed of the start noise of one chunk's walks: by its position alone (so any rank, or a later
    rerun that records the walk, draws the same noise)."""
    return seed * 1_000_003 + round_ * 10_007 + chunk


@decoding_once  # one decoded copy of the images for the whole run (lst_fast.data.decoded)
def run_evaluation(
    cfg: EvalConfig,
    out_dir,
    env: RunEnvironment = DEFAULT_ENVIRONMENT,
    pool: Optional[Pool] = None,
    simplices: Optional[SimplexSettings] = None,
    model: Optional[ModelDescriptor] = None,
    restart: bool = False,
) -> paper_tables.Tables:
    """Run (or resume) the evaluation; write OUT/results/*, OUT/tables.md and OUT/tables.json, and return
    the tables (the dict of tables.json: see lst_fast.evaluation.tables).

    Everything is checked before anything is written: the configuration, an existing config.json, the
    model, the data and the pool. Then rank 0 holds the folder's lock for the whole run (a second run in
    the same folder is refused), writes config.json and removes a killed run's temporary files.
    env: where and how it runs (lst_fast.run_environment): the device, the data and model folders, the
    scan's workers and batch, progress bars, CUDA graphs (none of it changes the tables).
    pool: a shared pool (lst_fast.evaluation.pool.Pool); cfg must be `pool_config(cfg, pool)`. The sources
    are the pool's images this model classifies correctly (above the pool's min_confidence; printed).
    simplices: also the k-simplices (lst_fast.evaluation.simplices): their files, the "simplices" entry of
    tables.json and its rows in tables.md (None: neither, as before).
    model: cfg.model already resolved by the caller (lst_fast.models.resolve_model), so a command that
    evaluates a model it has scanned loads it once (None: resolved here).
    restart: discard what an earlier run wrote in out_dir (its config.json, provenance.json, tables and
    result files) and start afresh, instead of refusing another configuration, other weights or other data.

    OUT/provenance.json records the weights and the pixels by digest (lst_fast.evaluation.provenance); a
    resumed run whose weights or data differ from it is refused in one line naming what changed.
    """
    cfg.validate()
    if simplices is not None:
        simplices.validate(cfg.rounds)
        simplices.check_memory(cfg.rounds, cfg.num_samples)  # before any work: its sources are at most these
    if (pool is None) != (cfg.pool is None) or (pool is not None and cfg != pool_config(cfg, pool)):
        raise InputError("a run on a shared pool takes pool= and cfg = pool_config(cfg, pool), or neither")
    rank, world = rank_and_world()
    store, device = EvaluationStore(out_dir), torch.device(env.device)
    env = env.replace(device=device)
    if not restart:
        store.check_config(cfg)
    classifier, data, pool_indices, targets, described = _load_model_and_pool(cfg, env, pool, model, say=rank == 0)
    # From here on only pool images are read, each 2 * rounds times by LST and once per pair of rounds by
    # the triangles: decode each once (bench/RESULTS.md, "Where an evaluation's time goes").
    work = _Work(cfg, store, device, rank, world, classifier, cached_images(data, pool_indices), pool_indices, targets)
    provenance = work.provenance = _provenance(cfg, work, described, pool)
    if not restart:
        refuse_changes(store.read_provenance(), provenance, str(store.root), CHANGED_ADVICE)
    with work.store.locked() if rank == 0 else contextlib.nullcontext():
        _claim_folder(work, provenance, restart)
        _run_chunks(work, env)
        barrier(world)
        per_round = [work.store.read_round(r, work.chunks) for r in range(cfg.rounds)]
        _compute_triangles(work, per_round)
        if simplices is not None:
            compute_simplices(
                classifier, work.data, pool_indices, per_round, store=store, cfg=cfg, settings=simplices, device=device
            )
        barrier(world)
        tables = _tables(work, per_round)
        markdown = paper_tables.tables_markdown(tables, cfg)
        if simplices is not None:
            tables["simplices"] = simplex_tables(store, cfg, simplices, len(pool_indices))
            markdown += "\n" + simplex_markdown(tables["simplices"])
        if rank == 0:
            work.store.write_tables(tables, markdown)
        barrier(world)
    return tables


# How to go on when a folder's weights or data changed (the end of the one-line refusal).
CHANGED_ADVICE = (
    "its results were made by other content: restore the weights and data, evaluate into a fresh --out, or start "
    "afresh with `lst-fast eval --restart` (a leaderboard: delete that model's folder)"
)


def _provenance(cfg: EvalConfig, work: _Work, described: ModelDescriptor, pool: Optional[Pool]) -> Provenance:
    """The weights and pixels this run walks, by digest. The pixels of a shared pool are the pool's own digest
    (the data was checked against it); those of its own pool are its sources, in the model's preprocessing."""
    weights = weights_digest(work.model, cfg.checkpoint)
    if pool is not None:
        sha, indices, pre = pool.data["pixels_sha256"], pool.indices, dict(pool.models[0]["preprocessing"])
    else:
        sha, indices, pre = pixels_digest(work.data, work.sources), work.sources, described.preprocessing.to_dict()
    return Provenance(
        model=cfg.model,
        weights_sha256=weights["sha256"],
        weights_of=weights["of"],
        pixels_sha256=sha,
        pixel_indices=tuple(indices.tolist()),
        preprocessing=pre,
    )


def _record_provenance(store: EvaluationStore, provenance: Provenance) -> None:
    """Write OUT/provenance.json, or check the one there. A folder of an earlier lst_fast (results, no
    provenance.json) is resumed unchecked and stays without one: its finished files were not made with
    these digests recorded, so none is claimed for them."""
    recorded = store.read_provenance()
    if recorded is not None:
        refuse_changes(recorded, provenance, str(store.root), CHANGED_ADVICE)
    elif store.has_results():
        warn_at_caller(
            f"{store.root} records no digest of its weights and data (written by an earlier lst_fast): its finished "
            "results are reused unchecked; a fresh --out (or --restart) records them",
            RuntimeWarning,
        )
    else:
        store.write_provenance(provenance)


def _claim_folder(work: _Work, provenance: Provenance, restart: bool) -> None:
    """Rank 0 (holding the folder's lock) discards an earlier run's files when restarting, writes (or checks)
    the configuration and the provenance and removes a killed run's leftovers first; the others then check
    them."""
    for turn in (0, 1):
        if (work.rank == 0) == (turn == 0):
            try:
                if restart and work.rank == 0:
                    work.store.discard()
                work.store.check_or_write_config(work.cfg)
                work.store.prepare()
                _record_provenance(work.store, provenance)
            except OSError as error:
                raise InputError(
                    f"cannot write to the output folder {work.store.root}: {error.strerror or error}"
                ) from error
            if work.rank == 0:
                work.store.remove_leftovers()
        barrier(work.world)


def _load_model_and_pool(
    cfg: EvalConfig,
    env: RunEnvironment,
    shared: Optional[Pool],
    described: Optional[ModelDescriptor],
    say: bool = True,
) -> Tuple[torch.nn.Module, ImageSet, Tensor, List[Tensor], ModelDescriptor]:
    """The model, the data (in the model's own preprocessing), the sources, each round's targets (data set
    indices; checked, nothing written) and the model's description."""
    from lst_fast.models import resolve_model

    if described is None:
        described = resolve_model(
            cfg.model, env.device, pretrained=cfg.pretrained, checkpoint=cfg.checkpoint, model_dir=env.model_dir
        )
    model = described.classifier()  # [0, 1] images to logits, its mean/std (if any) in front
    data = open_image_set(cfg.data, env.data_root, described.preprocessing)
    if shared is not None:
        found = _on_shared_pool(cfg, model, data, shared, env, say=say, preprocessing=described.preprocessing)
        return (model, data, *found, described)
    pool = own_pool_indices(model, data, cfg, env)
    if len(pool) < 2:
        raise InputError(f"the pool of correctly classified images has {len(pool)} images; need at least 2")
    targets = round_targets(data.labels[pool], cfg.rounds, cfg.seed)
    return model, data, pool, [pool[t] for t in targets], described


@timed_stage("pool")
def _on_shared_pool(
    cfg: EvalConfig,
    model: torch.nn.Module,
    data: ImageSet,
    pool: Pool,
    env: RunEnvironment,
    say: bool,
    preprocessing: Preprocessing,
) -> Tuple[Tensor, List[Tensor]]:
    """The sources (the pool's images the model classifies correctly, above the pool's min_confidence) and
    their targets: in every round the whole pool's derangement, restricted to those sources."""
    pool.check_data(data, cfg.data, data_root=env.data_root, preprocessing=preprocessing)
    if len(pool) < 2:
        raise InputError(f"the pool has {len(pool)} images; need at least 2")
    predicted, confidence = classify(model, data, pool.indices, env.replace(progress=False), name=cfg.model)
    ok = predicted == pool.labels
    if pool.min_confidence is not None:
        ok &= confidence > pool.min_confidence
    kept = torch.nonzero(ok).flatten()
    if say:
        bar = "" if pool.min_confidence is None else f" with confidence above {pool.min_confidence:g}"
        note = ""
        if cfg.model in pool.makers and len(kept) < len(pool):
            note = " (it made the pool, so its outputs differ from when the pool was built, e.g. on another device)"
        print(
            f"{cfg.model}: {len(kept)} of the pool's {len(pool)} images classified correctly{bar}; "
            f"evaluated on those{note}",
            flush=True,
        )
    if len(kept) < 2:
        raise TooFewSources(f"{cfg.model} classifies {len(kept)} of the pool's {len(pool)} images correctly; need 2")
    targets = round_targets(pool.labels, pool.rounds, pool.seed)  # the whole pool's: the same for every model
    return pool.indices[kept], [pool.indices[t[kept]] for t in targets]


@timed_stage("walks")
def _run_chunks(work: _Work, env: RunEnvironment) -> None:
    """LST on this rank's unfinished chunks, each written as it finishes (the next chunk's images are
    staged on the device meanwhile)."""
    from tqdm.auto import tqdm

    cfg, store, data = work.cfg, work.store, work.data
    mine = [(r, c) for r in range(cfg.rounds) for c in range(work.chunks)][work.rank :: work.world]
    image_shape = tuple(data.get(work.sources[:1]).shape[1:])
    todo = [job for job in mine if not store.has_chunk(*job, cfg, *work.chunk_rows(*job), image_shape, work.provenance)]
    bar = tqdm(
        total=len(mine),
        initial=len(mine) - len(todo),
        disable=not env.progress,
        desc="LST chunks" + (f" (rank {work.rank})" if work.world > 1 else ""),
    )

    def chunk_images(job: Tuple[int, int]) -> List[Tensor]:
        src, tgt = work.chunk_rows(*job)
        return [data.get(src), data.get(tgt), data.labels[src]]

    settings = cfg.lst.replace(graph=env.graph)  # how it runs, not what it computes: not in config.json
    cost = WalkCost(store.root, work.rank, work.device)  # each chunk's seconds (the leaderboard's cost column)
    for (r, c), (xs, xt, label) in staged_on_device(todo, chunk_images, work.device):
        started = time.perf_counter()
        src, tgt = work.chunk_rows(r, c)
        generator = torch.Generator(device=work.device).manual_seed(chunk_seed(cfg.seed, r, c))
        res = traverse(work.model, xs, xt, settings, label=label, generator=generator)
        with torch.no_grad():
            still = work.model(res.images).argmax(1) == res.label
        store.write_chunk(
            r,
            c,
            {
                "source": src,
                "target": tgt,
                "images": res.images,
                "initial_confidence": res.initial_confidence,
                "confidence": res.confidence,
                "still_source": still.double(),
                "accepted_steps": res.accepted_steps,
                **distances(res.images, xt),
            },
            cfg,
            work.provenance,
        )
        cost.add(r, c, len(src), settings.iterations, time.perf_counter() - started)
        bar.update(1)
    bar.close()


def staged_on_device(
    jobs: Sequence[Job], load: Callable[[Job], List[Tensor]], device: torch.device
) -> Iterator[Tuple[Job, List[Tensor]]]:
    """Yield (job, tensors on `device`) for each job; on CUDA the next job's tensors are copied from pinned
    memory on a side stream while the current job computes."""
    device = torch.device(device)
    if device.type != "cuda":
        for job in jobs:
            yield job, [t.to(device) for t in load(job)]
        return
    copy_stream = torch.cuda.Stream(device)

    def stage(job: Job) -> Tuple[Job, List[Tensor], List[Tensor]]:
        pinned = [t.pin_memory() for t in load(job)]
        with torch.cuda.stream(copy_stream):
            return job, [t.to(device, non_blocking=True) for t in pinned], pinned

    pending = stage(jobs[0]) if len(jobs) else None
    for i in range(len(jobs)):
        assert pending is not None
        job, moved, _pinned = pending  # the pinned sources stay referenced until their copy is consumed
        compute = torch.cuda.current_stream(device)
        compute.wait_stream(copy_stream)
        for t in moved:
            t.record_stream(compute)  # allocated on the copy stream, used on the compute stream
        pending = stage(jobs[i + 1]) if i + 1 < len(jobs) else None
        yield job, moved


@timed_stage("triangles")
def _compute_triangles(work: _Work, per_round: List[Dict[str, Tensor]]) -> None:
    """Confidence over the triangle (source, output of round r1, output of round r2) for every source
    and pair of rounds; this rank's share of the pairs, skipping finished ones."""
    cfg, device, sources, data = work.cfg, work.device, work.sources, work.data
    for r1, r2 in paper_tables.round_pairs(cfg.rounds)[work.rank :: work.world]:
        if work.store.has_triangles(r1, r2, cfg, (len(sources), len(triangle_weights(cfg.triangle_n)))):
            continue
        conf = []
        for start in range(0, len(sources), cfg.chunk_size):
            rows = slice(start, start + cfg.chunk_size)
            conf.append(
                triangle_confidence(
                    work.model,
                    data.get(sources[rows]).to(device),
                    per_round[r1]["images"][rows].to(device),
                    per_round[r2]["images"][rows].to(device),
                    data.labels[sources[rows]].to(device),
                    n=cfg.triangle_n,
                    precision=cfg.lst.precision,
                ).cpu()
            )
        work.store.write_triangles(r1, r2, torch.cat(conf), cfg)


@timed_stage("tables")
def _tables(work: _Work, per_round: List[Dict[str, Tensor]]) -> paper_tables.Tables:
    triangles = [work.store.read_triangles(r1, r2) for r1, r2 in paper_tables.round_pairs(work.cfg.rounds)]
    return paper_tables.summarize(
        paper_tables.table1_per_pair(per_round),
        paper_tables.table2_per_source(triangles, work.cfg.triangle_n, len(work.sources)),
        len(work.sources),
        work.cfg.rounds,
    )
