"""graph=True running out of memory, on the CPU with the CUDA pieces stubbed: the replay drops its capture
and owned copies before the batch is redone at half size, and an out-of-memory inside a capture that
surfaces from capture_end() as a RuntimeError halves the batch like any other (lst_fast.walk.graph_replay,
lst_fast.walk.batching.run_in_batches)."""

from __future__ import annotations

import contextlib
import weakref

import pytest
import torch

from lst_fast.walk import batching, graph_replay
from lst_fast.walk.batching import OUT_OF_MEMORY
from lst_fast.walk.graph_replay import GraphReplay
from lst_fast.walk.state import WalkConstants, WalkState


class FakeStream:
    def wait_stream(self, other) -> None:
        pass


@pytest.fixture
def no_cuda_streams(monkeypatch):
    """GraphReplay on the CPU: streams that do nothing."""
    monkeypatch.setattr(torch.cuda, "Stream", lambda device=None: FakeStream())
    monkeypatch.setattr(torch.cuda, "current_stream", lambda device=None: FakeStream())
    monkeypatch.setattr(torch.cuda, "stream", lambda stream: contextlib.nullcontext())


def walk_tensors(n: int):
    fixed = WalkConstants(target=torch.rand(n, 1, 4, 4), label=torch.zeros(n, dtype=torch.long), p0=torch.rand(n))
    state = WalkState(
        x=torch.rand(n, 1, 4, 4),
        grad=torch.rand(n, 1, 4, 4),
        adv=torch.zeros(n, 1, 4, 4),
        confidence=torch.rand(n, dtype=torch.float64),
        accepted_steps=torch.zeros(n, dtype=torch.long),
    )
    return fixed, state


def capture_that_runs_out_of_memory(fn, stream):
    """What torch.cuda.graph does when an allocation inside the capture fails: its exit calls capture_end(),
    whose RuntimeError replaces the out-of-memory error (which stays as its __context__)."""
    try:
        raise OUT_OF_MEMORY("CUDA out of memory. Tried to allocate 2.00 GiB")
    finally:
        raise RuntimeError("CUDA error: operation failed due to a previous error during capture")  # noqa: B012


def test_a_new_shape_drops_the_old_capture_before_copying(monkeypatch):
    replay = GraphReplay(torch.device("cpu"))
    replay.adopt(*walk_tensors(8))
    replay.graph = object()  # as if captured
    old = [weakref.ref(t) for t in graph_replay._flatten(replay.tensors)]
    alive_when_copying = []
    real_copy = graph_replay._owned_copy

    def watching_copy(tensors):
        alive_when_copying.append(sum(r() is not None for r in old))
        return real_copy(tensors)

    monkeypatch.setattr(graph_replay, "_owned_copy", watching_copy)
    replay.adopt(*walk_tensors(4))
    assert alive_when_copying == [0, 0]  # before the fix all 8 old tensors lived while the copies were made
    assert replay.graph is None and replay.tensors[1].x.shape[0] == 4


def test_out_of_memory_in_capture_halves_the_batch_and_drops_the_capture(no_cuda_streams, monkeypatch):
    monkeypatch.setattr(graph_replay, "capture", capture_that_runs_out_of_memory)
    replay = GraphReplay(torch.device("cpu"), warmup=1)
    held_when_halved = []

    def run(part, bar):
        n = part.stop - part.start
        held_when_halved.append(replay.tensors is not None)
        fixed, state = replay.adopt(*walk_tensors(n))
        step = replay.runner(lambda: state.x.add_(0), iterations=5)
        if n > 2:  # batches of 8 and 4 reach the capture, which runs out of memory; 2 fits (no capture)
            step()
        return n

    with pytest.warns(RuntimeWarning, match="continuing with batches of") as caught:
        parts, size = batching.run_in_batches(
            run, 8, 8, automatic=True, device=torch.device("cpu"), steps_per_batch=1, progress=False
        )
    assert [str(w.message).rsplit(" ", 1)[1] for w in caught] == ["4", "2"]
    assert parts == [2, 2, 2, 2] and size == 2
    assert held_when_halved[:3] == [False, False, False]  # each retry starts with the old capture gone


def test_other_errors_in_capture_are_not_taken_for_out_of_memory(no_cuda_streams, monkeypatch):
    def failing_capture(fn, stream):
        raise RuntimeError("CUDA error: operation not permitted when stream is capturing")

    monkeypatch.setattr(graph_replay, "capture", failing_capture)
    replay = GraphReplay(torch.device("cpu"), warmup=1)
    replay.adopt(*walk_tensors(4))
    with pytest.raises(RuntimeError, match="not permitted"):
        replay.runner(lambda: None, iterations=5)()
