"""Every model's verdict on every other model's LST outputs (`lst-fast leaderboard`, `lst-fast compare`).

An LST output of model A looks like its target, yet A still says the source class. Model B's verdict on
that output says whose blind spot it is: B says the source class too (a shared blind spot), B says the
target class (B sees what a person sees: the blind spot is A's own), or B says some other class. For every
ordered pair (A, B) of models on paired runs, B classifies each of A's outputs once:

    ROOT/<A's folder name>/<B's folder name>.safetensors     B's verdict on every output of A

one row per round and one column per source of A (its evaluation's order): `predicted` (B's class),
`predicted_p` (B's confidence in it), `source_p` and `target_p` (B's confidence in the source and the
target class), with `source` and `target` (data set indices). B reads A's outputs as B reads images: its
own normalization in front (ModelDescriptor.classifier) and its own input size (an output of another size
is resized, bilinear with antialiasing; a grey output given to an RGB model is repeated on the three
channels, an RGB one given to a grey model is converted by ITU-R 601-2 luma). The forwards are batched as
A's evaluation batched its walks (one batch per chunk file), on the chosen device: so the diagonal (A on
its own outputs) is computed as A's "still source" column was.

Each file records what it was computed from: A's configuration, a SHA-256 of A's outputs, and B's model
(spec, pretrained, checkpoint). A file whose record and shapes match is reused (nothing already computed
is redone); a stale one (A's outputs or B changed) or an unreadable one is recomputed with a warning.

`verdict_matrix` turns the files into M x M matrices of four statistics (the share of A's outputs that B
classifies as the source class, as the target class, as another class, and B's mean confidence in the
source class), each per source first (averaged over the source's rounds, as the leaderboard's Table 1
columns), then over the sources both A and B have, with a 95% bootstrap interval from the given resamples
of the source positions (the leaderboard passes its own, so the matrix is paired with every column), and
the paired difference of each cell to its row's diagonal (B's verdict minus A's own, on the same sources).
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

from lst_fast.atomic_files import atomic_save_tensors
from lst_fast.backends.confidence import class_probability
from lst_fast.caller_warning import warn_at_caller
from lst_fast.errors import InputError
from lst_fast.evaluation.bootstrap import bootstrap_means
from lst_fast.evaluation.store import RESUME_ADVICE, EvaluationStore, load_tensors
from lst_fast.models.descriptor import ModelDescriptor
from lst_fast.run_environment import DEFAULT_ENVIRONMENT, RunEnvironment
from lst_fast.walk.result import METADATA_KEY

__all__ = [
    "STATISTICS",
    "VERDICT_FORMAT",
    "judge_input",
    "judge_outputs",
    "board_verdicts",
    "outputs_digest",
    "per_source",
    "read_verdicts",
    "verdict_matrix",
    "verdict_path",
]

VERDICT_FORMAT = "lst-fast verdicts 1"
# The four statistics of the matrix: key -> what a cell says (B on A's outputs).
STATISTICS: Dict[str, str] = {
    "source": "share B classifies as the source class",
    "target": "share B classifies as the target class",
    "other": "share B classifies as another class",
    "source_p": "B's mean confidence in the source class",
}
PER_OUTPUT = ("predicted", "predicted_p", "source_p", "target_p")


def verdict_path(root, maker: str, judge: str) -> Path:
    """ROOT/<maker>/<judge>.safetensors: judge's verdict on maker's outputs (file-safe names)."""
    return Path(root) / maker / f"{judge}.safetensors"


def outputs_digest(store: EvaluationStore) -> str:
    """SHA-256 of every LST output of a finished evaluation (its chunk files' images, in order)."""
    cfg, chunks = store.read_config(), store.chunks_per_round()
    digest = hashlib.sha256()
    for r in range(cfg.rounds):
        for c in range(chunks):
            images = store.read_chunk(r, c)["images"].to(torch.float32).contiguous()
            digest.update(images.numpy().data)  # hashed in place, no copy
    return digest.hexdigest()


def judge_input(images: Tensor, input_size: Sequence[int]) -> Tensor:
    """LST outputs (N, C, H, W) in [0, 1] as a model of `input_size` (C, H, W) takes them (see the module
    docstring): channels repeated or converted to grey, then resized where the size differs."""
    channels, height, width = (int(v) for v in input_size)
    if images.shape[1] != channels:
        if images.shape[1] == 1 and channels == 3:
            images = images.expand(-1, 3, -1, -1)
        elif images.shape[1] == 3 and channels == 1:
            luma = torch.tensor([0.299, 0.587, 0.114], dtype=images.dtype, device=images.device)
            images = (images * luma.view(1, 3, 1, 1)).sum(1, keepdim=True)
        else:
            raise InputError(f"cannot give images of {images.shape[1]} channels to a model of {channels}")
    if tuple(images.shape[2:]) != (height, width):
        images = F.interpolate(images, size=(height, width), mode="bilinear", antialias=True, align_corners=False)
        images = images.clamp(0.0, 1.0)
    return images


def _record(maker_store: EvaluationStore, judge: Dict[str, Any], digest: str) -> Dict[str, Any]:
    return {
        "format": VERDICT_FORMAT,
        "maker_config": maker_store.read_config().to_dict(),
        "outputs_sha256": digest,
        "judge": judge,
    }


def _reusable(path: Path, record: Dict[str, Any], source: Tensor, target: Tensor) -> Optional[Dict[str, Tensor]]:
    """The file's tensors when it was computed from `record` on these sources and targets; None (with a
    warning when the file is there) otherwise."""
    if not path.is_file():
        return None
    from safetensors import safe_open

    try:
        with safe_open(str(path), "pt") as f:
            found = json.loads((f.metadata() or {}).get(METADATA_KEY, "{}"))
        tensors = load_tensors(path)
    except Exception as error:  # truncated, not safetensors, bad record
        warn_at_caller(f"{path}: it cannot be read ({' '.join(str(error).split())}); recomputing it", RuntimeWarning)
        return None
    if found != json.loads(json.dumps(record)):
        theirs = found if isinstance(found, dict) else {}
        differ = sorted(k for k in record if theirs.get(k) != json.loads(json.dumps(record[k])))
        warn_at_caller(
            f"{path}: computed from other inputs ({', '.join(differ)} differ); recomputing it", RuntimeWarning
        )
        return None
    shape = tuple(target.shape)
    if (
        any(tuple(tensors.get(k, torch.empty(0)).shape) != shape for k in PER_OUTPUT)
        or not torch.equal(tensors.get("source", torch.empty(0)), source)
        or not torch.equal(tensors.get("target", torch.empty(0)), target)
    ):
        warn_at_caller(
            f"{path}: its sources, targets or shapes are not the evaluation's; recomputing it", RuntimeWarning
        )
        return None
    return tensors


@torch.no_grad()
def judge_outputs(
    maker_folder,
    judge: Dict[str, Any],
    resolve: Callable[[], ModelDescriptor],
    path,
    labels: Tensor,
    device="cpu",
) -> Tuple[Dict[str, Tensor], bool]:
    """(the verdicts, whether they were computed now) of the judge on every LST output of the finished
    evaluation in `maker_folder`, read from `path` when it holds them (see the module docstring), else
    computed and written there. judge: what identifies the judging model (spec, pretrained, checkpoint),
    recorded in the file; resolve: returns it (called only when something must be computed); labels: the
    class of every data set index."""
    store = EvaluationStore(maker_folder)
    store.require_finished()
    cfg, chunks = store.read_config(), store.chunks_per_round()
    # the indices only: each chunk's images are read again when they are judged (a large run's outputs
    # need not fit in memory)
    walked = [
        [{k: v for k, v in store.read_chunk(r, c).items() if k in ("source", "target")} for c in range(chunks)]
        for r in range(cfg.rounds)
    ]
    source = torch.cat([part["source"] for part in walked[0]])
    target = torch.stack([torch.cat([part["target"] for part in parts]) for parts in walked])
    if any(not torch.equal(torch.cat([p["source"] for p in parts]), source) for parts in walked):
        raise InputError(f"{maker_folder}: its rounds hold different sources; it cannot be judged")
    path = Path(path)
    record = _record(store, judge, outputs_digest(store))
    found = _reusable(path, record, source, target)
    if found is not None:
        return found, False
    described = resolve()
    model, device = described.classifier(), torch.device(device)
    labels = labels.to(torch.long)
    rows: Dict[str, List[Tensor]] = {k: [] for k in PER_OUTPUT}
    for r, parts in enumerate(walked):
        per_round: Dict[str, List[Tensor]] = {k: [] for k in PER_OUTPUT}
        for c, part in enumerate(parts):  # one forward per chunk: the batches of the evaluation's "still source"
            images = judge_input(store.read_chunk(r, c)["images"].to(device), described.input_size)
            logits = model(images)
            probability = torch.softmax(logits.to(torch.float64), 1)
            predicted = logits.argmax(1)
            per_round["predicted"].append(predicted.cpu())
            per_round["predicted_p"].append(probability.gather(1, predicted[:, None]).squeeze(1).cpu())
            per_round["source_p"].append(class_probability(logits, labels[part["source"]].to(device)).cpu())
            per_round["target_p"].append(class_probability(logits, labels[part["target"]].to(device)).cpu())
        for k in PER_OUTPUT:
            rows[k].append(torch.cat(per_round[k]))
    tensors = {k: torch.stack(v) for k, v in rows.items()}
    tensors.update({"source": source, "target": target})
    atomic_save_tensors(tensors, path, {METADATA_KEY: json.dumps(record, allow_nan=False)}, RESUME_ADVICE)
    return tensors, True


def read_verdicts(path) -> Optional[Dict[str, Tensor]]:
    """The tensors of a verdict file (what the site shows), or None when there is none or it is unreadable
    (it is not trusted for anything but display: the leaderboard vets it before reuse)."""
    path = Path(path)
    if not path.is_file():
        return None
    try:
        tensors = load_tensors(path)
    except ValueError:
        return None
    return tensors if all(k in tensors for k in (*PER_OUTPUT, "source", "target")) else None


def per_source(verdicts: Dict[str, Tensor], labels: Tensor) -> Dict[str, Tensor]:
    """Each statistic per source of the file (S,): averaged over the source's rounds."""
    predicted = verdicts["predicted"]
    source_label = labels[verdicts["source"]].unsqueeze(0).expand_as(predicted)
    target_label = labels[verdicts["target"]]
    says_source = (predicted == source_label).double()
    says_target = (predicted == target_label).double()
    return {
        "source": says_source.mean(0),
        "target": says_target.mean(0),
        "other": (1.0 - says_source - says_target).mean(0),
        "source_p": verdicts["source_p"].double().mean(0),
    }


def _cell(values: Tensor, weights: Tensor) -> Dict[str, float]:
    """Mean over the positions that have a value, and the 95% percentile interval of its resamples."""
    if bool(values.isnan().all()):
        return {"mean": math.nan, "low": math.nan, "high": math.nan}
    mean = float(bootstrap_means(values.unsqueeze(0), torch.ones(1, len(values), dtype=torch.float64))[0, 0])
    boots = bootstrap_means(values.unsqueeze(0), weights)[:, 0]
    boots = boots[~boots.isnan()]
    return {"mean": mean, "low": float(torch.quantile(boots, 0.025)), "high": float(torch.quantile(boots, 0.975))}


def verdict_matrix(
    verdicts: Dict[Tuple[str, str], Dict[str, Tensor]],
    models: Sequence[str],
    positions: Tensor,
    labels: Tensor,
    weights: Tensor,
) -> Dict[str, Any]:
    """The M x M matrices (rows: whose outputs, A; columns: whose verdict, B) of every statistic, from the
    verdict files' tensors (`verdicts[(A, B)]`; a pair without one is n/a). positions: the data set index
    of each resampled position (the pool's order); weights: the (resamples, positions) counts of the
    bootstrap. A cell is over the sources A and B both have (B's own sources are those of its file on its
    own outputs; where B has none, all of A's), with its 95% interval, and its paired difference to A's
    diagonal cell on those sources. Returns the "verdicts" entry of leaderboard.json."""
    where = {int(i): k for k, i in enumerate(positions.tolist())}
    size = len(where)

    def place(values: Tensor, sources: Tensor) -> Tensor:
        full = torch.full((size,), math.nan, dtype=torch.float64)
        full[torch.tensor([where[int(i)] for i in sources.tolist()], dtype=torch.long)] = values.double()
        return full

    own: Dict[str, Optional[Tensor]] = {}  # each model's sources, as a mask over the positions
    for m in models:
        mine = verdicts.get((m, m))
        own[m] = None if mine is None else ~place(torch.zeros(len(mine["source"])), mine["source"]).isnan()
    nothing = {"mean": math.nan, "low": math.nan, "high": math.nan}
    cells: Dict[str, List[List[Dict[str, Any]]]] = {k: [] for k in STATISTICS}
    shared: List[List[int]] = []
    for a in models:
        diagonal = None
        if (a, a) in verdicts:
            diagonal = {
                k: place(v, verdicts[(a, a)]["source"]) for k, v in per_source(verdicts[(a, a)], labels).items()
            }
        row_shared: List[int] = []
        for k in STATISTICS:
            cells[k].append([])
        for b in models:
            found = verdicts.get((a, b))
            if found is None:
                row_shared.append(0)
                for k in STATISTICS:
                    cells[k][-1].append({**nothing, "difference": dict(nothing)})
                continue
            values = {k: place(v, found["source"]) for k, v in per_source(found, labels).items()}
            keep = ~values["source"].isnan()
            if own[b] is not None:
                keep &= own[b]
            row_shared.append(int(keep.sum()))
            for k in STATISTICS:
                mine = torch.where(keep, values[k], math.nan)
                cell: Dict[str, Any] = _cell(mine, weights)
                if diagonal is not None:
                    cell["difference"] = _cell(torch.where(keep, mine - diagonal[k], math.nan), weights)
                else:
                    cell["difference"] = dict(nothing)
                cells[k][-1].append(cell)
        shared.append(row_shared)
    return {
        "models": list(models),
        "statistics": dict(STATISTICS),
        "resamples": int(weights.shape[0]),
        "sources": [int(own[m].sum()) if own[m] is not None else 0 for m in models],
        "shared": shared,
        "cells": cells,
    }


def board_verdicts(
    out: Path,
    models: Sequence[str],
    folders: Dict[str, Path],
    pool,
    weights: Tensor,
    env: RunEnvironment = DEFAULT_ENVIRONMENT,
    resolved: Optional[Dict[str, ModelDescriptor]] = None,
    still_source: Optional[Dict[str, Tensor]] = None,
) -> Dict[str, Any]:
    """The leaderboard's matrices: every evaluated model (a key of `folders`, its finished evaluation) on
    every other's outputs, files under OUT/verdicts/ (computed where missing or stale), over the pool's
    positions and the leaderboard's resamples `weights`. A model of `models` without a folder (no sources)
    gets n/a cells. still_source: each model's "still source" per pool position; the diagonal is checked
    against it (a warning names a model whose diagonal differs, e.g. computed on another device). env: the
    device of the forwards and the model folder."""
    from lst_fast.models import resolve_model

    resolved = {} if resolved is None else resolved
    labels = torch.full((int(pool.data["size"]),), -1, dtype=torch.long)
    labels[pool.indices] = pool.labels
    names = {m: folders[m].name for m in folders}
    configs = {m: EvaluationStore(folders[m]).read_config() for m in folders}

    def resolver(spec: str) -> Callable[[], ModelDescriptor]:
        def resolve() -> ModelDescriptor:
            if spec not in resolved:
                cfg = configs[spec]
                resolved[spec] = resolve_model(
                    spec, env.device, pretrained=cfg.pretrained, checkpoint=cfg.checkpoint, model_dir=env.model_dir
                )
            return resolved[spec]

        return resolve

    found: Dict[Tuple[str, str], Dict[str, Tensor]] = {}
    computed = 0
    for a in folders:
        for b in folders:
            judge = {"model": b, "pretrained": configs[b].pretrained, "checkpoint": configs[b].checkpoint}
            path = verdict_path(out / "verdicts", names[a], names[b])
            found[(a, b)], new = judge_outputs(folders[a], judge, resolver(b), path, labels=labels, device=env.device)
            computed += new
    if found:
        print(f"verdicts: {computed} of {len(found)} files computed, {len(found) - computed} reused", flush=True)
    matrix = verdict_matrix(found, list(models), pool.indices, labels=labels, weights=weights)
    for k, m in enumerate(models):
        if still_source is None or m not in still_source or matrix["sources"][k] == 0:
            continue
        own = per_source(found[(m, m)], labels)["source"]
        where = pool.positions(found[(m, m)]["source"])
        differ = int((own != still_source[m][where]).sum())
        if differ:
            warn_at_caller(
                f"{m}: its verdict on its own outputs differs from its 'still source' column on {differ} sources "
                "(its forwards rounded otherwise, e.g. on another device or thread count)",
                RuntimeWarning,
            )
    return matrix
