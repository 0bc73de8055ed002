"""One pool of source images for a set of models (`lst-fast leaderboard`, `lst-fast eval --pool FILE`).

The pool holds the images that every model that makes it classifies correctly, with confidence above
`min_confidence` when it is set (the paper: 0.6). It is built the cheap way: the data set's indices are
put in a seeded random order (`scan_order`: torch.randperm on a CPU generator, so the same on any
machine), read in that order in batches by a torch DataLoader (worker processes decode image files; the
batches arrive in order, whatever the number of workers), and each batch goes through the models in turn:
a model sees only the images that every model before it accepted. The scan stops as soon as `num_samples`
images qualify. The pool is therefore the first `num_samples` qualifying images of the seeded order: a
uniform sample of the qualifying images, the same one a full scan followed by a seeded draw would give in
distribution, at the cost of `scanned` candidates instead of the whole data set.

What a pool identifies is data set indices. Each model reads those images with its own preprocessing
(its resize and crop: `open_image_set(data, root, descriptor.preprocessing)`), as `lst-fast eval` does;
for in-memory data sets (Fashion-MNIST, CIFAR-10, tensor files) every model reads the same pixels.

The pool file is small JSON (no pickle), written atomically:

    format, version           "lst-fast pool", 2
    data                      the data set's identity: spec, kind, size, SHA-256 of its labels and of the
                              pool images' decoded pixels (float32, in the first maker's preprocessing)
    models                    the models that made it (model, checkpoint, pretrained, preprocessing)
    settings                  num_samples, min_confidence, seed, rounds (the seed and the rounds decide
                              every source's targets: an evaluation on the pool takes both from here)
    indices, labels           the pool, in the seeded order (so any prefix is a uniform sample too)
    confidence                per model: its confidence in the true class of each pool image
    scan                      what building it cost (ScanStats: scanned, decoded, forwards per model, ...)
    digest                    SHA-256 of every field the code reads: all but the confidences and the
                              scan's cost, which only record what building it saw (pool_file.py)

Reading a pool file checks every field's type and range and the digest first (pool_file.check_fields):
any problem is one line naming the field. A data set is the pool's when its kind (the spec up to its
first ':'; a folder may move), its size, its labels' digest and the pool images' pixels are the pool's;
`Pool.check_data` refuses another with one line saying why.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import os
import time
import traceback
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple, Union

import torch
from torch import Tensor, nn

from lst_fast.atomic_files import atomic_write_text
from lst_fast.backends.confidence import class_probability
from lst_fast.checks import check_count, check_optional_count
from lst_fast.data.decoded import DecodedImageSet, remembered_digest
from lst_fast.data.image_set import ImageSet
from lst_fast.data.preprocessing import Preprocessing
from lst_fast.errors import DataError, InputError, MissingFile
from lst_fast.evaluation.model_fit import check_model_fits_data
from lst_fast.evaluation.pool_file import check_fields, content_digest, parse_json
from lst_fast.run_environment import DEFAULT_BATCH, DEFAULT_ENVIRONMENT, QUIET_ENVIRONMENT, RunEnvironment

__all__ = [
    "POOL_FORMAT",
    "Pool",
    "PoolMember",
    "ScanStats",
    "build_pool",
    "classify",
    "data_identity",
    "default_workers",
    "load_pool",
    "qualifies",
    "scan_order",
    "select_pool",
]

POOL_FORMAT, POOL_VERSION = "lst-fast pool", 2


def default_workers(data: ImageSet) -> int:
    """Decoding workers by default: min(4, CPU cores) for image files, none for in-memory data (indexing a
    tensor is cheaper than handing it between processes)."""
    if data.in_memory:
        return 0
    return max(0, min(4, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1))


def scan_order(size: int, seed: int) -> Tensor:
    """The seeded order in which a pool scans a data set of `size` images (a CPU generator: the same on
    every machine)."""
    return torch.randperm(size, generator=torch.Generator().manual_seed(int(seed)))


def data_identity(data: ImageSet, spec: str, indices: Tensor) -> Dict[str, Any]:
    """What makes a data set the same one: its kind (the spec up to the first ':'), size, labels, and the
    pixels of the pool's images (`indices`)."""
    labels = data.labels.to(torch.int64).contiguous().numpy().tobytes()
    return {
        "spec": spec,
        "kind": spec.partition(":")[0],
        "size": len(data),
        "labels_sha256": hashlib.sha256(labels).hexdigest(),
        "pixels_sha256": pixels_digest(data, indices),
    }


def pixels_digest(data: ImageSet, indices: Tensor, batch: int = DEFAULT_BATCH) -> str:
    """SHA-256 of the images at `indices` as `data` decodes them (float32, in order): costs only those, and
    inside a command's decoding scope (lst_fast.data.decoded) only once per preprocessing."""
    indices = indices.to(torch.long).cpu()
    return remembered_digest(data, indices, lambda: _hash_images(data, indices, batch))


def _hash_images(data: ImageSet, indices: Tensor, batch: int) -> str:
    digest = hashlib.sha256()
    for start in range(0, len(indices), batch):
        images = data.get(indices[start : start + batch]).to(torch.float32).contiguous()
        digest.update(images.numpy().data)  # hashed in place, no copy
    return digest.hexdigest()


def qualifies(logits: Tensor, labels: Tensor, min_confidence: Optional[float]) -> Tuple[Tensor, Tensor]:
    """(ok, confidence): whether each image is classified correctly (and with confidence in its true class
    above min_confidence, when set), and that confidence (float64)."""
    confidence = class_probability(logits, labels)
    ok = logits.argmax(1) == labels
    if min_confidence is not None:
        ok &= confidence > min_confidence
    return ok, confidence


@dataclasses.dataclass
class PoolMember:
    """One model of a pool: a name (its spec), the module from [0, 1] images to logits (eval mode), and
    the data set as this model reads it (its preprocessing)."""

    name: str
    module: nn.Module
    data: ImageSet


@dataclasses.dataclass
class ScanStats:
    """What building a pool cost. scanned: candidates of the seeded order up to the one that filled the
    pool (the whole data set when it did not fill); decoded: images the loader delivered, per distinct
    preprocessing (a few prefetched batches beyond the stop are not counted); forwards: images each model
    classified; qualifying: the pool's size."""

    size: int
    scanned: int
    decoded: int
    forwards: Dict[str, int]
    qualifying: int
    seconds: float
    workers: int
    batch_size: int
    filled: bool

    def to_dict(self) -> Dict[str, Any]:
        return dataclasses.asdict(self)


class _Batches(torch.utils.data.Dataset):
    """Batch b of the scan: (b, images per distinct data view); fetched whole, in a worker or here."""

    def __init__(self, views: Sequence[ImageSet], order: Tensor, batch_size: int):
        self.views, self.order, self.batch_size = list(views), order, batch_size

    def __len__(self) -> int:
        return (len(self.order) + self.batch_size - 1) // self.batch_size

    def __getitem__(self, b: int) -> Tuple[int, Any]:
        index = self.order[b * self.batch_size : (b + 1) * self.batch_size]
        try:
            return b, [view.get(index) for view in self.views]
        except Exception as error:
            if torch.utils.data.get_worker_info() is None:
                raise
            # In a worker: hand the error itself to the main process, which raises it as it is (torch
            # would raise a copy whose message is the worker's whole traceback).
            error.add_note("raised in a DataLoader worker process:\n" + "".join(traceback.format_exc()))
            return b, _WorkerError(error)


@dataclasses.dataclass
class _WorkerError:
    """An error raised while a worker process decoded a batch."""

    error: Exception


def _batches(views: Sequence[ImageSet], order: Tensor, batch_size: int, workers: int) -> Iterator[Tuple[int, Any]]:
    """The batches of `order` in order (a DataLoader keeps its batches' order whatever its workers); an
    error in a worker is raised here as the worker raised it (its own one-line message, e.g. naming the
    image file that could not be read)."""
    decoded = [v for v in views if isinstance(v, DecodedImageSet)]
    if workers and decoded and len(decoded) == len(views) and all(v.covers(order) for v in decoded):
        workers = 0  # every image is in memory already: no process to start, nothing to decode
    dataset = _Batches(views, order, batch_size)
    loader = torch.utils.data.DataLoader(dataset, batch_size=None, shuffle=False, num_workers=workers)
    for b, images in loader:
        if isinstance(images, _WorkerError):
            raise images.error
        if workers:  # decoded in a worker process: the command's copy keeps them (lst_fast.data.decoded)
            index = order[b * batch_size : (b + 1) * batch_size]
            for view, batch in zip(views, images, strict=True):
                if isinstance(view, DecodedImageSet):
                    view.keep(index, batch)
        yield b, images


def _views(members: Sequence[PoolMember]) -> Tuple[List[ImageSet], List[int]]:
    """The distinct data sets of the members (one per preprocessing) and each member's view."""
    views: List[ImageSet] = []
    which = []
    for member in members:
        found = next((k for k, v in enumerate(views) if v is member.data), None)
        if found is None:
            views.append(member.data)
            found = len(views) - 1
        which.append(found)
    return views, which


def _check_settings(num_samples: int, min_confidence: Optional[float], env: RunEnvironment):
    batch_size, workers = env.batch_size, env.workers
    check_count("num_samples", num_samples, 1)
    mc = min_confidence
    if mc is not None and (isinstance(mc, bool) or not isinstance(mc, (int, float)) or not 0 <= mc < 1):
        raise InputError(f"min_confidence must be None or a number in [0, 1), got {mc!r}")
    check_count("batch_size", batch_size, 1)
    check_optional_count("workers", workers, 0, none_means="the data set's default")


@torch.no_grad()
def select_pool(
    members: Sequence[PoolMember],
    num_samples: int,
    min_confidence: Optional[float] = None,
    seed: int = 0,
    env: RunEnvironment = DEFAULT_ENVIRONMENT,
) -> Tuple[Tensor, Dict[str, Tensor], ScanStats]:
    """(indices, confidence per member, stats): the first `num_samples` images of the seeded order that
    every member classifies correctly (above min_confidence when set), each candidate passing through the
    members in turn (a rejection ends its check). The members share one data set (the same labels)."""
    from tqdm.auto import tqdm

    _check_settings(num_samples, min_confidence, env)
    batch_size = env.batch_size
    if not members:
        raise InputError("a pool needs at least one model")
    labels = members[0].data.labels
    for member in members[1:]:
        if len(member.data) != len(labels) or not torch.equal(member.data.labels, labels):
            raise InputError(f"{member.name} reads another data set than {members[0].name}")
    views, which = _views(members)
    workers = default_workers(views[0]) if env.workers is None else env.workers
    device = torch.device(env.device)
    order = scan_order(len(labels), seed)
    chosen: List[Tensor] = []
    confidence: Dict[str, List[Tensor]] = {m.name: [] for m in members}
    forwards = {m.name: 0 for m in members}
    have, scanned, decoded = 0, 0, 0
    start = time.perf_counter()
    bar = tqdm(total=len(order), disable=not env.progress, desc="pool", unit="img", dynamic_ncols=True)
    for b, images in _batches(views, order, batch_size, workers):
        index = order[b * batch_size : (b + 1) * batch_size]
        decoded += len(index) * len(views)
        alive = torch.ones(len(index), dtype=torch.bool)
        conf = torch.full((len(members), len(index)), float("nan"), dtype=torch.float64)
        for m, member in enumerate(members):
            rows = torch.nonzero(alive).flatten()
            if rows.numel() == 0:
                break
            x = images[which[m]][rows].to(device)
            # the whole data set's labels on a model's first batch, the batch's after it
            checked = labels if forwards[member.name] == 0 else labels[index[rows]]
            logits = check_model_fits_data(
                member.module(x), len(rows), checked, model=member.name, data=member.data.name
            )
            ok, p = qualifies(logits, labels[index[rows]].to(device), min_confidence)
            forwards[member.name] += rows.numel()
            conf[m, rows] = p.cpu()
            alive[rows[~ok.cpu()]] = False
        passed = torch.nonzero(alive).flatten()[: num_samples - have]
        if have + passed.numel() >= num_samples:  # full: the scan ends at the image that filled it
            used = int(passed[-1]) + 1
        else:
            used = len(index)
        chosen.append(index[passed])
        for m, member in enumerate(members):
            confidence[member.name].append(conf[m, passed])
        have += passed.numel()
        scanned += used
        bar.update(used)
        bar.set_postfix(pool=f"{have}/{num_samples}")
        if have >= num_samples:
            break
    bar.close()
    stats = ScanStats(
        size=len(order),
        scanned=scanned,
        decoded=decoded,
        forwards=forwards,
        qualifying=have,
        seconds=time.perf_counter() - start,
        workers=workers,
        batch_size=batch_size,
        filled=have >= num_samples,
    )
    cat = torch.cat(chosen) if chosen else torch.empty(0, dtype=torch.long)
    return cat, {k: torch.cat(v) if v else torch.empty(0, dtype=torch.float64) for k, v in confidence.items()}, stats


@torch.no_grad()
def classify(
    module: nn.Module,
    data: ImageSet,
    indices: Tensor,
    env: RunEnvironment = QUIET_ENVIRONMENT,
    desc: str = "classify",
    name: str = "the model",
) -> Tuple[Tensor, Tensor]:
    """(predicted class, confidence in the true class) of each of `indices` (in their order), decoded by
    a DataLoader as the pool scan decodes. name: the model's, for the error when it does not fit the data
    (lst_fast.evaluation.model_fit)."""
    from tqdm.auto import tqdm

    _check_settings(1, None, env)
    batch_size, device = env.batch_size, env.device
    indices = indices.to(torch.long).cpu()
    workers = default_workers(data) if env.workers is None else env.workers
    predicted, confidence = [], []
    bar = tqdm(total=len(indices), disable=not env.progress, desc=desc, unit="img", dynamic_ncols=True)
    for b, (images,) in _batches([data], indices, batch_size, workers):
        index = indices[b * batch_size : (b + 1) * batch_size]
        checked = data.labels if b == 0 else data.labels[index]  # the whole data set's on the first batch
        logits = check_model_fits_data(module(images.to(device)), len(index), checked, model=name, data=data.name)
        predicted.append(logits.argmax(1).cpu())
        confidence.append(class_probability(logits, data.labels[index].to(device)).cpu())
        bar.update(len(index))
    bar.close()
    if not predicted:
        return torch.empty(0, dtype=torch.long), torch.empty(0, dtype=torch.float64)
    return torch.cat(predicted), torch.cat(confidence)


def _model_entry(spec: str, checkpoint: Optional[str], pretrained: bool, preprocessing) -> Dict[str, Any]:
    return {"model": spec, "checkpoint": checkpoint, "pretrained": pretrained, "preprocessing": preprocessing}


@dataclasses.dataclass(frozen=True)
class Pool:
    """A pool of source images (see the module docstring); `digest` names it in each run's config.json."""

    data: Dict[str, Any]
    models: Tuple[Dict[str, Any], ...]
    num_samples: int
    min_confidence: Optional[float]
    seed: int
    rounds: int
    indices: Tensor
    labels: Tensor
    confidence: Dict[str, List[float]]
    scan: Dict[str, Any]

    def __len__(self) -> int:
        return int(self.indices.numel())

    @property
    def makers(self) -> List[str]:
        return [m["model"] for m in self.models]

    def settings(self) -> Dict[str, Any]:
        return {
            "num_samples": self.num_samples,
            "min_confidence": self.min_confidence,
            "seed": self.seed,
            "rounds": self.rounds,
        }

    def _fields(self) -> Dict[str, Any]:
        return {
            "format": POOL_FORMAT,
            "version": POOL_VERSION,
            "data": self.data,
            "models": list(self.models),
            "settings": self.settings(),
            "indices": self.indices.tolist(),
            "labels": self.labels.tolist(),
            "confidence": self.confidence,
            "scan": self.scan,
        }

    @functools.cached_property
    def digest(self) -> str:
        """SHA-256 of every field of the pool file that the code reads (pool_file.content_digest)."""
        return content_digest(self._fields())

    def to_dict(self) -> Dict[str, Any]:
        return {**self._fields(), "digest": self.digest}

    def save(self, path: Union[str, os.PathLike]) -> Path:
        return atomic_write_text(path, json.dumps(self.to_dict(), indent=1, allow_nan=False) + "\n")

    @classmethod
    def from_dict(cls, values: Dict[str, Any], name: str = "the pool") -> "Pool":
        if not isinstance(values, dict) or values.get("format") != POOL_FORMAT:
            raise InputError(f'{name} is not an lst-fast pool file (no "format": "{POOL_FORMAT}")')
        if values.get("version") != POOL_VERSION:
            raise DataError(
                f"{name} is a pool file of version {values.get('version')!r}; this lst_fast reads {POOL_VERSION} "
                "(build the pool again)"
            )
        check_fields(values, name)
        settings = values["settings"]
        pool = cls(
            data=dict(values["data"]),
            models=tuple(dict(m) for m in values["models"]),
            num_samples=settings["num_samples"],
            min_confidence=settings["min_confidence"],
            seed=settings["seed"],
            rounds=settings["rounds"],
            indices=torch.tensor(values["indices"], dtype=torch.long),
            labels=torch.tensor(values["labels"], dtype=torch.long),
            confidence={k: list(v) for k, v in values["confidence"].items()},
            scan=dict(values["scan"]),
        )
        if pool.digest != values["digest"]:  # the same fields, as this lst_fast writes them
            raise DataError(f"{name} has been changed since it was written (its digest does not match its contents)")
        return pool

    def check_data(
        self,
        data: ImageSet,
        spec: str,
        name: str = "the pool",
        data_root: Optional[str] = None,
        preprocessing: Optional[Preprocessing] = None,
    ) -> None:
        """DataError (one line) unless `data` is the data set the pool was built on: its kind, size and
        labels, and the pixels of the pool's images. `preprocessing` is how `data` was opened; the pixels
        are compared in the first maker's preprocessing (the data set is opened again in it from
        `data_root` when `data` is an image-file set opened in another)."""
        found = data_identity(data, spec, torch.empty(0, dtype=torch.long))
        ours = self.data
        why = [
            f"{what} {ours[key]} vs {found[key]}"
            for key, what in (("kind", "data"), ("size", "images"))
            if ours[key] != found[key]
        ]
        if not why and ours["labels_sha256"] != found["labels_sha256"]:
            why.append("its labels differ")
        if why:
            raise InputError(
                f"{name} was built on another data set ({ours['spec']}, {ours['size']} images) than {spec} "
                f"({found['size']} images): {', '.join(why)}; build a pool for this data set"
            )
        if len(self) and int(self.indices.max()) >= len(data):
            raise DataError(f"{name} holds index {int(self.indices.max())}, beyond the {len(data)} images of {spec}")
        if not torch.equal(data.labels[self.indices], self.labels):
            raise DataError(f"{name}'s labels are not those of {spec} at its indices")
        recorded = self.models[0]["preprocessing"]
        if not data.in_memory and (preprocessing is None or preprocessing.to_dict() != recorded):
            from lst_fast.data.sources import open_image_set

            data = open_image_set(
                spec, data_root, Preprocessing(**{**recorded, "input_size": tuple(recorded["input_size"])})
            )
        if pixels_digest(data, self.indices) != ours["pixels_sha256"]:
            raise DataError(
                f"{name} was built on other images than those of {spec} at its indices (same labels, other "
                "pixels); build a pool for this data set"
            )

    def positions(self, indices: Tensor, name: str = "the results") -> Tensor:
        """The pool position of each data set index in `indices`; DataError naming `name` when one is
        not in the pool."""
        where = {int(i): k for k, i in enumerate(self.indices.tolist())}
        outside = [int(i) for i in indices.tolist() if int(i) not in where]
        if outside:
            raise DataError(f"{name} hold source {outside[0]}, which is not in the pool")
        return torch.tensor([where[int(i)] for i in indices.tolist()], dtype=torch.long)


def load_pool(path: Union[str, os.PathLike]) -> Pool:
    """Read a pool file; ValueError naming it when it is missing, not JSON, malformed or changed."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise MissingFile(f"no pool file {path} (`lst-fast leaderboard` writes OUT/pool.json)") from None
    except UnicodeDecodeError as error:
        raise DataError(f"{path} is not a pool file (not UTF-8 text: {error})") from error
    return Pool.from_dict(parse_json(text, str(path)), str(path))


def build_pool(
    models: Sequence[Union[str, Dict[str, Any]]],
    data_spec: str,
    num_samples: int,
    min_confidence: Optional[float] = None,
    seed: int = 0,
    rounds: int = 5,
    env: RunEnvironment = DEFAULT_ENVIRONMENT,
    resolved: Optional[Dict[str, Any]] = None,
) -> Tuple[Pool, ScanStats]:
    """Build the pool of the named models (specs, or dicts with model, checkpoint, pretrained) on the data
    set `data_spec` (see the module docstring); return it with what it cost. Nothing is written. `rounds` is
    recorded in the pool: the rounds of targets every evaluation on it walks. resolved: spec -> the
    ModelDescriptor the caller already resolved; a model not in it is resolved here and added to it, so a
    command that goes on with the same models resolves each once."""
    from lst_fast.data.sources import open_image_set
    from lst_fast.models import resolve_model

    entries = [m if isinstance(m, dict) else {"model": m} for m in models]
    specs = [e["model"] for e in entries]
    if len(set(specs)) != len(specs):
        raise InputError(f"the models of a pool must differ, got {specs}")
    members, views, described_models = [], {}, []
    for entry in entries:
        checkpoint, pretrained = entry.get("checkpoint"), bool(entry.get("pretrained", True))
        described = (resolved or {}).get(entry["model"])
        if described is None:
            described = resolve_model(
                entry["model"], env.device, pretrained=pretrained, checkpoint=checkpoint, model_dir=env.model_dir
            )
            if resolved is not None:
                resolved[entry["model"]] = described
        pre = described.preprocessing
        if pre not in views:  # one data view per distinct preprocessing
            views[pre] = open_image_set(data_spec, env.data_root, pre)
        members.append(PoolMember(entry["model"], described.classifier(), views[pre]))
        described_models.append(_model_entry(entry["model"], checkpoint, pretrained, pre.to_dict()))
    indices, confidence, stats = select_pool(members, num_samples, min_confidence, seed, env)
    first = members[0].data
    pool = Pool(
        data=data_identity(first, data_spec, indices),
        models=tuple(described_models),
        num_samples=num_samples,
        min_confidence=None if min_confidence is None else float(min_confidence),
        seed=int(seed),
        rounds=int(rounds),
        indices=indices,
        labels=first.labels[indices],
        confidence={k: v.tolist() for k, v in confidence.items()},
        scan=stats.to_dict(),
    )
    return pool, stats
