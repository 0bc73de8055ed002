"""One LST iteration replayed from a CUDA graph (`graph=True`), for all batches of one shape in a traversal.

A CUDA graph replays its kernels on the memory it was captured with. So the replay owns that memory: the
first batch of a shape gets private copies of its tensors (`adopt`), the walk updates those in place, and
a later batch of the same shape copies its values into them and replays from its first iteration. The
caller's own tensors (the user's targets and labels, another batch's results) are never captured and so
never overwritten; whatever a batch returns must be copied out of the owned tensors before the next batch.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, List, Optional, Tuple

import torch
from torch import Tensor

from lst_fast.walk.batching import OUT_OF_MEMORY
from lst_fast.walk.runtime import on_device
from lst_fast.walk.state import WalkConstants, WalkState

Tensors = Tuple[WalkConstants, WalkState]


class GraphReplay:
    """The first `warmup` iterations of a new shape run eagerly on a side stream (as the capture rules want;
    they are real iterations), then the next call captures the iteration without running it, and every
    call after that replays it. One capture is kept at a time: a batch of another shape drops it. Capture
    and replay run under the input's device, on a stream of that device, whichever device is current.

    The side stream is made once, on first use, and serves every warm-up and capture after it: the caching
    allocator reuses a freed block only on the stream that allocated it, so a new stream per warm-up
    iteration would hold every warm-up iteration's temporaries at once.

    Out of memory (the batch driver then halves the batch and redoes it): the capture and its owned copies
    are dropped before the error leaves, so the half-size copies are not made beside them; an
    out-of-memory inside a capture that surfaces from capture_end() as a RuntimeError leaves as an
    out-of-memory error too, so that it halves the batch.
    """

    def __init__(self, device: torch.device, warmup: int = 3) -> None:
        self.device, self.warmup = device, warmup
        self.graph = None
        self.calls = 0
        self.tensors: Optional[Tensors] = None
        self.stream: "Optional[torch.cuda.Stream]" = None

    def adopt(self, fixed: WalkConstants, state: WalkState) -> Tensors:
        """The tensors the next walk must use, owned by the replay: the captured ones with this batch's
        values copied in when the shapes match the capture; otherwise fresh copies (any capture dropped)."""
        if self.graph is not None and self.tensors is not None and _same_shapes(self.tensors, (fixed, state)):
            for mine, new in zip(_flatten(self.tensors), _flatten((fixed, state)), strict=True):
                mine.copy_(new)
            return self.tensors
        self.drop()  # the old capture's memory pool and copies go before the new copies are made
        owned = (_owned_copy(fixed), _owned_copy(state))
        self.tensors = owned
        return owned

    def drop(self) -> None:
        """Forget the capture and the owned tensors (their memory returns to the allocator)."""
        self.graph, self.calls, self.tensors = None, 0, None

    def runner(self, iteration: Callable[[], None], iterations: int) -> Callable[[], None]:
        """`iteration` as the walk calls it: eager while warming up, then captured once, then replayed."""

        def run() -> None:
            try:
                step()
            except (OUT_OF_MEMORY, RuntimeError) as error:
                if not is_out_of_memory(error):
                    raise
                self.drop()
                if isinstance(error, OUT_OF_MEMORY):
                    raise
                raise OUT_OF_MEMORY(f"out of memory while capturing the CUDA graph: {error}") from error

        def step() -> None:
            with on_device(self.device):
                if self.graph is not None:
                    self.graph.replay()
                    return
                self.calls += 1
                if self.stream is None:
                    self.stream = torch.cuda.Stream(self.device)
                side = self.stream
                side.wait_stream(torch.cuda.current_stream(self.device))
                with torch.cuda.stream(side):
                    iteration()
                torch.cuda.current_stream(self.device).wait_stream(side)
                if self.calls == self.warmup and iterations > self.warmup:
                    self.graph = capture(iteration, side)

        return run


def capture(fn: Callable[[], None], stream: "torch.cuda.Stream") -> "torch.cuda.CUDAGraph":
    """Record fn in a CUDA graph on `stream` (fn does not run). Call under that stream's device."""
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph, stream=stream):
        fn()
    return graph


def is_out_of_memory(error: BaseException) -> bool:
    """An out-of-memory error, or a RuntimeError that one caused: inside a capture the allocation's error
    can be replaced by capture_end()'s ("operation failed due to a previous error during capture")."""
    seen = 0
    while error is not None and seen < 8:
        if isinstance(error, OUT_OF_MEMORY) or "out of memory" in str(error).lower():
            return True
        error, seen = error.__cause__ or error.__context__, seen + 1  # type: ignore[assignment]
    return False


def _owned_copy(tensors):
    """A copy of a WalkConstants or WalkState whose tensors are new memory in the same layout."""
    return dataclasses.replace(
        tensors,
        **{
            f.name: getattr(tensors, f.name).clone(memory_format=torch.preserve_format)
            for f in dataclasses.fields(tensors)
        },
    )


def _flatten(tensors: Tensors) -> List[Tensor]:
    fixed, state = tensors
    return [*fixed.fields(), *state.fields()]


def _same_shapes(a: Tensors, b: Tensors) -> bool:
    return all(x.shape == y.shape and x.stride() == y.stride() for x, y in zip(_flatten(a), _flatten(b), strict=True))
