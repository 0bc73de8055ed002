"""What watches a walk without changing it: each observer's `stepped(iteration, state)` runs after every
iteration, outside any CUDA graph. The walk itself (lst_fast.walk.loop.walk) knows nothing of what they do.

Every walk has one `WalkEnd` among its observers, which its precision picks (lst_fast.walk.precision): it says
which images the walk returns. Exact mode's is `FinalIterate`, bf16 mode's the end check `EndCheck`."""

from __future__ import annotations

from typing import Any, Callable, Dict, List, Protocol, Tuple

import torch
from torch import Tensor

from lst_fast.backends.confidence import class_probability
from lst_fast.walk.runtime import cudnn_autotune
from lst_fast.walk.state import WalkState

# How many iterates the bf16 end check keeps at most (the start among them), each a copy of the batch's
# images with their accepted-step counts: memory the batch holds until its walk ends.
KEPT_ITERATES = 20


class WalkObserver(Protocol):
    def stepped(self, iteration: int, state: WalkState) -> None:
        """Called after iteration `iteration` (1-based) with the state as it now is."""


class WalkEnd(WalkObserver, Protocol):
    """The observer that decides what a walk returns."""

    p0: Tensor  # the clean source's confidence for the label, as reported (float64)

    def finish(self, state: WalkState) -> Tuple[Tensor, Tensor, Tensor]:
        """(images, accepted steps, confidence for the label) to return, in tensors the batch may keep."""


class Recorder:
    """Keeps the iterate and its source- and target-class confidences at iteration 0, every `every`
    iterations and at the last one. The target-class confidence comes from one forward of the walk's
    model at the kept iterate (outside the walk, so the walk's state holds only what it needs). Each kept
    iterate is copied to `device` (a host read when that is the CPU and the walk runs on a GPU)."""

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

    def traces(self) -> Dict[str, Tensor]:
        return {
            "trace_iterations": torch.tensor(self.iterations, dtype=torch.long),
            "trace_confidence": torch.stack(self.confidence),
            "trace_target_confidence": torch.stack(self.target_confidence),
            "trace_images": torch.stack(self.images),
        }


class ProgressReport:
    """The progress bar: one tick per iteration; the acceptance rate and the mean confidence 20 times per
    walk (two host reads each time)."""

    def __init__(self, bar: Any, samples: int, iterations: int) -> None:
        self.bar, self.samples, self.last = bar, samples, iterations
        self.every = max(1, iterations // 20)

    def stepped(self, iteration: int, state: WalkState) -> None:
        self.bar.update(1)
        if iteration % self.every == 0 or iteration == self.last:
            self.bar.set_postfix(
                accept=f"{float(state.accepted_steps.sum()) / (self.samples * iteration):.2f}",
                conf=f"{float(state.confidence.mean()):.3f}",
            )


class FinalIterate:
    """Exact mode's end: the walk's last iterate is what it returns. With `copy` (a CUDA graph replay owns
    the state's memory, and the next batch of this shape overwrites it) the outputs are copied out."""

    def __init__(self, p0: Tensor, copy: bool) -> None:
        self.p0 = p0.clone() if copy else p0
        self.copy = copy

    def stepped(self, iteration: int, state: WalkState) -> None:
        pass

    def finish(self, state: WalkState) -> Tuple[Tensor, Tensor, Tensor]:
        x, steps, confidence = state.x, state.accepted_steps, state.confidence
        if self.copy:
            x, steps, confidence = x.clone(memory_format=torch.preserve_format), steps.clone(), confidence.clone()
        return x, steps, confidence


class EndCheck:
    """bf16 mode's end: the walk judges with the bf16 copy, so the end points are checked with the model as
    given (p0 - p < threshold, with its own p0). A sample whose final iterate fails walks back to the
    newest kept iterate that passes (KEPT_ITERATES evenly spaced iterates are kept, with their
    accepted-step counts); a sample none of whose kept iterates passes keeps its start (as in exact mode
    when no step is accepted). One forward of the model as given per batch, plus one per walk-back on the
    failing few. Its outputs are new tensors, so a graph replay's memory is never handed out."""

    @staticmethod
    def copies_held(iterations: int) -> int:
        """The most copies of the batch's images a walk of `iterations` makes it hold: the kept iterates
        (the start and every `every`-th iterate before the last) and finish's result."""
        every = max(1, -(-iterations // KEPT_ITERATES))
        return 1 + len(range(every, iterations, every)) + 1

    def __init__(
        self,
        report: Callable[[Tensor], Tensor],
        state: WalkState,
        label: Tensor,
        p0: Tensor,
        threshold: float,
        iterations: int,
    ) -> None:
        self.report, self.label, self.p0, self.threshold, self.last = report, label, p0, threshold, iterations
        self.every = max(1, -(-iterations // KEPT_ITERATES))
        self.kept: List[Tuple[Tensor, Tensor]] = []
        self.keep(state)

    def stepped(self, iteration: int, state: WalkState) -> None:
        if iteration % self.every == 0 and iteration < self.last:  # the last one is `finish`'s to judge
            self.keep(state)

    def keep(self, state: WalkState) -> None:
        self.kept.append((state.x.clone(memory_format=torch.preserve_format), state.accepted_steps.clone()))

    def finish(self, state: WalkState) -> Tuple[Tensor, Tensor, Tensor]:
        """(images, accepted steps, confidence for the model as given) to return."""
        x, steps = state.x.clone(memory_format=torch.preserve_format), state.accepted_steps.clone()
        # The walk-back forwards subsets of ever-changing size: autotuning cuDNN for each would cost more
        # than these few forwards.
        with torch.no_grad(), cudnn_autotune(False):
            confidence = class_probability(self.report(x), self.label)
            failing = (~(self.p0 - confidence < self.threshold)).nonzero()[:, 0]
            for kept_x, kept_steps in reversed(self.kept):
                if failing.numel() == 0:
                    break
                p = class_probability(self.report(kept_x[failing]), self.label[failing])
                passes = self.p0[failing] - p < self.threshold
                if kept_x is self.kept[0][0]:  # the start: kept whatever it gives
                    passes = torch.ones_like(passes)
                back = failing[passes]
                x[back], steps[back], confidence[back] = kept_x[back], kept_steps[back], p[passes]
                failing = failing[~passes]
        return x, steps, confidence
