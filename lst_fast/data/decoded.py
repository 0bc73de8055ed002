"""Each image decoded once per command: one decoded, preprocessed copy of the images a command reads.

A command (`lst-fast leaderboard`, `eval`, `site`) runs inside one decoding scope (`decoded_once`). In it,
`open_image_set` opens each data set once (an `imagenet:` open lists 50,000 files) and hands out one view
per preprocessing (`ImageSet.reopen`: the same files, another resize and crop); each view of image files
keeps every image it decodes (`DecodedImageSet`), so the pool's scan, its pixel digest, every model's check
and evaluation, LPIPS and the site's pages all read the one copy. The pixel digest of a set of indices is
computed once per view (`remembered_digest`).

Memory: the copy is stored as uint8 where the preprocessing yields whole levels of 1/255 (timm's transforms
without normalization do: 150 KB an image at 224 px, exact), else float32. It is held up to a budget,
LST_FAST_DECODED_GIB (default 4 GiB, for all views together): past it, the images not yet kept are decoded
again at each read, with one warning per command; results do not change, only the time.

Outside a scope (a library call that opens data sets itself) nothing is kept and every read decodes, as
before. In-memory data sets (Fashion-MNIST, CIFAR-10, tensor files) are opened once per scope and need no
copy.
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import functools
import hashlib
import os
import time
import warnings
from collections import Counter
from typing import Callable, Dict, Iterator, List, Optional, Tuple, TypeVar

import torch
from torch import Tensor

from lst_fast.data.image_set import ImageSet
from lst_fast.data.preprocessing import IMAGENET_EVAL, Preprocessing
from lst_fast.errors import InputError
from lst_fast.stage_times import stage

__all__ = [
    "BUDGET_VARIABLE",
    "DecodeCounts",
    "DecodeScope",
    "DecodedImageSet",
    "current_scope",
    "decoded_once",
    "decoding_once",
    "opened_once",
    "remembered_digest",
]

BUDGET_VARIABLE = "LST_FAST_DECODED_GIB"
DEFAULT_BUDGET_GIB = 4.0

Opener = Callable[[str, Optional[str], Optional[Preprocessing]], ImageSet]
F = TypeVar("F", bound=Callable)


@dataclasses.dataclass
class DecodeCounts:
    """What a scope did: data set opens (file listings), image decodes per (view, data set index), pixel
    digests computed, and the seconds spent decoding in this process."""

    opens: int = 0
    decodes: Counter = dataclasses.field(default_factory=Counter)
    digests: int = 0
    decode_seconds: float = 0.0

    def most_decodes(self) -> int:
        """The most times any one image was decoded in one preprocessing (0 when none was)."""
        return max(self.decodes.values(), default=0)


def _budget_bytes() -> int:
    text = os.environ.get(BUDGET_VARIABLE)
    if text is None:
        return int(DEFAULT_BUDGET_GIB * 2**30)
    try:
        gib = float(text)
    except ValueError:
        gib = -1.0
    if not gib >= 0 or gib == float("inf"):
        raise InputError(f"{BUDGET_VARIABLE} must be a number of GiB >= 0, got {text!r}")
    return int(gib * 2**30)


class DecodeScope:
    """The opened data sets and decoded copies of one command (see the module docstring)."""

    def __init__(self, budget_bytes: Optional[int] = None) -> None:
        self.budget_bytes = _budget_bytes() if budget_bytes is None else int(budget_bytes)
        self.held_bytes = 0
        self.counts = DecodeCounts()
        self.warned = False
        self.opened: Dict[Tuple[str, Optional[str]], ImageSet] = {}
        self.opened_in: Dict[Tuple[str, Optional[str]], Preprocessing] = {}  # the preprocessing of each open
        self.views: Dict[Tuple[str, Optional[str], Preprocessing], "DecodedImageSet"] = {}

    def open(self, spec: str, root: Optional[str], pre: Optional[Preprocessing], opener: Opener) -> ImageSet:
        base = self.opened.get((spec, root))
        if base is None:
            base = opener(spec, root, pre)
            self.counts.opens += 1
            self.opened[(spec, root)] = base
            self.opened_in[(spec, root)] = pre or IMAGENET_EVAL
        if base.in_memory or base.reopen is None:
            return base
        pre = pre or IMAGENET_EVAL
        view = self.views.get((spec, root, pre))
        if view is None:
            raw = base if pre == self.opened_in[(spec, root)] else base.reopen(pre)
            view = self.views[(spec, root, pre)] = DecodedImageSet(raw, self, f"{spec} {pre.to_dict()}")
        return view

    def room_for(self, nbytes: int) -> bool:
        """Whether `nbytes` more fit the budget; the first time they do not, one warning."""
        if self.held_bytes + nbytes <= self.budget_bytes:
            self.held_bytes += nbytes
            return True
        if not self.warned:
            self.warned = True
            warnings.warn(
                f"the decoded images reached their memory budget of {self.budget_bytes / 2**30:.3g} GiB "
                f"({BUDGET_VARIABLE}): images beyond it are decoded again at each read (same results, more time)",
                RuntimeWarning,
                stacklevel=2,
            )
        return False


_SCOPE: contextvars.ContextVar[Optional[DecodeScope]] = contextvars.ContextVar("lst_fast_decode_scope", default=None)


def current_scope() -> Optional[DecodeScope]:
    """The decoding scope of the running command (None outside one)."""
    return _SCOPE.get()


@contextlib.contextmanager
def decoded_once(budget_bytes: Optional[int] = None) -> Iterator[DecodeScope]:
    """A command's decoding scope; inside an open one, that one (so a command that runs others shares it)."""
    outer = _SCOPE.get()
    if outer is not None:
        yield outer
        return
    scope = DecodeScope(budget_bytes)
    token = _SCOPE.set(scope)
    try:
        yield scope
    finally:
        _SCOPE.reset(token)


def decoding_once(function: F) -> F:
    """`function` run inside a decoding scope (its caller's, when there is one)."""

    @functools.wraps(function)
    def scoped(*args, **kwargs):
        with decoded_once():
            return function(*args, **kwargs)

    return scoped  # type: ignore[return-value]


def opened_once(spec: str, root: Optional[str], pre: Optional[Preprocessing], opener: Opener) -> ImageSet:
    """opener(spec, root, pre) outside a scope; inside one, the scope's view (opened at its first use)."""
    scope = _SCOPE.get()
    if scope is None:
        return opener(spec, root, pre)
    return scope.open(spec, root, pre, opener)


def _in_worker() -> bool:
    return torch.utils.data.get_worker_info() is not None


def _compact(images: Tensor) -> Tuple[Tensor, Tensor]:
    """(the batch as uint8 levels, which images that is exact for: whole levels of 1/255, the float32 of
    x / 255.0), in one pass over the batch."""
    levels = (images * 255.0).round_()
    exact = ((levels >= 0) & (levels <= 255)).flatten(1).all(1)
    small = levels.clamp_(0, 255).to(torch.uint8)
    exact &= (small.to(torch.float32).div_(255.0) == images).flatten(1).all(1)
    return small, exact


class DecodedImageSet(ImageSet):
    """A view of image files that keeps each image it decodes (within its scope's budget): every later
    read of it is a copy from memory. Images decoded in a DataLoader worker are handed back with `keep`.
    The held images are rows of one uint8 tensor (`slab`, grown by doubling), so a batch is read with one
    gather; an image that is not exactly uint8 / 255 is held as float32 on its own (`floats`)."""

    def __init__(self, raw: ImageSet, scope: DecodeScope, key: str) -> None:
        super().__init__(raw.labels, self._fetch, raw.name, raw.class_names, reopen=raw.reopen)
        self.raw, self.scope, self.key = raw, scope, key
        self.slab: Optional[Tensor] = None
        self.slot: Dict[int, int] = {}  # data set index -> row of the slab
        self.floats: Dict[int, Tensor] = {}
        self.digests: Dict[str, str] = {}

    def held(self, i: int) -> bool:
        return i in self.slot or i in self.floats

    def covers(self, index: Tensor) -> bool:
        """Whether every image of `index` is held."""
        return all(self.held(i) for i in index.tolist())

    def keep(self, index: Tensor, images: Tensor) -> None:
        """Hold the images a worker process decoded for `index` (those not held yet count as decodes)."""
        new = list(dict.fromkeys(k for k, i in enumerate(index.tolist()) if not self.held(i)))
        for k in new:
            self.scope.counts.decodes[(self.key, int(index[k]))] += 1
        if new:
            self._hold([int(index[k]) for k in new], images[new])

    def warm(self, index: Tensor, workers: int = 1, batch: int = 16) -> None:
        """Decode the images of `index` not held yet now, `workers` threads at a time (Pillow's decoders and
        resizes release the GIL), and hold them: a reader that knows what it will read (the site: every
        walk's source and target) pays the decodes up front on every core."""
        from concurrent.futures import ThreadPoolExecutor

        asked = dict.fromkeys(index.to(torch.long).cpu().tolist())
        wanted = [i for i in asked if 0 <= i < len(self) and not self.held(i)]
        batches = [torch.tensor(wanted[k : k + batch], dtype=torch.long) for k in range(0, len(wanted), batch)]
        if not batches:
            return
        start = time.perf_counter()
        with stage("decode"), ThreadPoolExecutor(max(1, workers)) as pool:
            decoded = list(pool.map(self.raw.get, batches))
        self.scope.counts.decode_seconds += time.perf_counter() - start
        for part, images in zip(batches, decoded, strict=True):
            for i in part.tolist():
                self.scope.counts.decodes[(self.key, i)] += 1
            self._hold(part.tolist(), images)

    def _hold(self, indices: List[int], images: Tensor) -> None:
        small, exact = _compact(images)
        rows = []
        for k, i in enumerate(indices):
            if self.held(i):
                continue
            if not bool(exact[k]):
                if self.scope.room_for(images[k].numel() * 4):
                    self.floats[i] = images[k].clone()
                continue
            if self.scope.room_for(small[k].numel()):
                rows.append(k)
        if not rows:
            return
        used = len(self.slot)
        if self.slab is None or used + len(rows) > self.slab.shape[0]:
            grown = torch.empty(max(2 * used, used + len(rows), 64), *small.shape[1:], dtype=torch.uint8)
            if self.slab is not None:
                grown[:used] = self.slab[:used]
            self.slab = grown
        self.slab[used : used + len(rows)] = small[rows]
        for n, k in enumerate(rows):
            self.slot[indices[k]] = used + n

    def _fetch(self, index: Tensor) -> Tensor:
        wanted = index.tolist()
        missing = list(dict.fromkeys(i for i in wanted if not self.held(i)))
        decoded = None
        if missing:
            start = time.perf_counter()
            with stage("decode"):
                decoded = self.raw.get(torch.tensor(missing, dtype=torch.long))
            if not _in_worker():  # in a worker the main process keeps what it receives (keep)
                self.scope.counts.decode_seconds += time.perf_counter() - start
                for i in missing:
                    self.scope.counts.decodes[(self.key, i)] += 1
                self._hold(missing, decoded)
        if not wanted:
            return self.raw.get(index)
        shape = decoded.shape[1:] if decoded is not None else self._shape()
        out = torch.empty(len(wanted), *shape, dtype=torch.float32)
        fresh = {i: k for k, i in enumerate(missing)}
        in_slab = [(k, self.slot[i]) for k, i in enumerate(wanted) if i in self.slot and i not in fresh]
        if in_slab:
            rows, slots = (torch.tensor(v, dtype=torch.long) for v in zip(*in_slab, strict=True))
            out[rows] = self.slab[slots].to(torch.float32).div_(255.0)  # the float32 of x / 255.0, as decoded
        from_decode = [(k, fresh[i]) for k, i in enumerate(wanted) if i in fresh]
        if from_decode:
            rows, positions = (torch.tensor(v, dtype=torch.long) for v in zip(*from_decode, strict=True))
            out[rows] = decoded[positions]
        for k, i in enumerate(wanted):
            if i in self.floats and i not in fresh:
                out[k] = self.floats[i]
        return out

    def _shape(self) -> Tuple[int, ...]:
        if self.slab is not None:
            return tuple(self.slab.shape[1:])
        return tuple(next(iter(self.floats.values())).shape)

    def digest(self, indices: Tensor, compute: Callable[[], str]) -> str:
        """compute() (the pixel digest of `indices` in this view), once per set of indices."""
        key = hashlib.sha256(indices.to(torch.long).cpu().contiguous().numpy().tobytes()).hexdigest()
        if key not in self.digests:
            self.digests[key] = compute()
        return self.digests[key]


def remembered_digest(data: ImageSet, indices: Tensor, compute: Callable[[], str]) -> str:
    """The pixel digest of `indices` in `data`: computed once per view inside a scope, else each time."""
    scope = _SCOPE.get()
    if indices.numel() == 0:  # the digest of no images (a data set's identity without its pixels): free
        return compute()

    def counted() -> str:
        if scope is not None:
            scope.counts.digests += 1
        return compute()

    if isinstance(data, DecodedImageSet):
        return data.digest(indices, counted)
    return counted()
