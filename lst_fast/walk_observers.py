"""What watches a walk without changing it: each observer's `stepped(iteration, state)` runs after every
iteration, outside any CUDA graph. The walk itself (lst_fast.loop.walk) knows nothing of what they do."""

from __future__ import annotations

from typing import Callable, List, Protocol

import torch
from torch import Tensor

from lst_fast.reference import class_probability
from lst_fast.walk_state import WalkState


class WalkObserver(Protocol):
    def stepped(self, iteration: int, state: WalkState) -> None:
        """Called after iteration `iteration` (1-based) with the state as it now is."""


class Recorder:
    """Keeps the iterate and its source- and target-class confidences at iteration 0, every `every`
    iterations and at the last one. The target-class confidence comes from one forward of the walk's
    model at the kept iterate (outside the walk, so the walk's state holds only what it needs)."""

    def __init__(
        self,
        every: int,
        last: int,
        forward: Callable[[Tensor], Tensor],
        target_label: Tensor,
        device: torch.device,
        state: WalkState,
    ) -> None:
        self.every, self.last, self.forward, self.target_label, self.device = every, last, forward, target_label, device
        self.iterations: List[int] = []
        self.confidence: List[Tensor] = []
        self.target_confidence: List[Tensor] = []
        self.images: List[Tensor] = []
        self.record(0, state)

    @staticmethod
    def records(every: int, last: int) -> int:
        """How many iterates a walk of `last` iterations recording every `every` keeps."""
        return 1 + sum(1 for i in range(1, last + 1) if i % every == 0 or i == last)

    def stepped(self, iteration: int, state: WalkState) -> None:
        if iteration % self.every == 0 or iteration == self.last:
            self.record(iteration, state)

    def record(self, iteration: int, state: WalkState) -> None:
        with torch.no_grad():
            target_confidence = class_probability(self.forward(state.x), self.target_label).float()
        self.iterations.append(iteration)
        self.confidence.append(state.confidence.float().clone())
        self.target_confidence.append(target_confidence)
        self.images.append(state.x.to(self.device, copy=True))

    def traces(self) -> dict:
        return {
            "trace_iterations": torch.tensor(self.iterations, dtype=torch.long),
            "trace_confidence": torch.stack(self.confidence),
            "trace_target_confidence": torch.stack(self.target_confidence),
            "trace_images": torch.stack(self.images),
        }


class ProgressReport:
    """The progress bar: one tick per iteration; the acceptance rate and the mean confidence 20 times per
    walk (the only host reads in the loop)."""

    def __init__(self, bar, samples: int, iterations: int) -> None:
        self.bar, self.samples, self.last = bar, samples, iterations
        self.every = max(1, iterations // 20)

    def stepped(self, iteration: int, state: WalkState) -> None:
        self.bar.update(1)
        if iteration % self.every == 0 or iteration == self.last:
            self.bar.set_postfix(
                accept=f"{float(state.accepted_steps.sum()) / (self.samples * iteration):.2f}",
                conf=f"{float(state.confidence.mean()):.3f}",
            )
