"""The LST loop on one batch (docs/ALGORITHM.md section 1), with one forward+backward per iteration.

The paper's loop evaluates the model twice per iteration: forward+backward at x for the gradient, then a
forward at the candidate for the acceptance test. Here the candidate's forward+backward serves both: its
logits decide acceptance and, when accepted, its gradient is the next iteration's; when rejected, the
gradient at x is still the one in hand. The iterates are the same (bit for bit in fp32 on the CPU).

`walk` is the algorithm, top to bottom, on a state `start_state` sets up; what watches it (the recorder,
the progress bar, the end of the walk) is lst_fast.walk.observers', and lst_fast.walk.graph_replay replays one
iteration from a CUDA graph (opt-in). Everything here works on one batch of tensors already on the
device, in the working dtype and layout; the call around it (inputs, precision, batches, the batch's
start and result) is lst_fast.walk.call_plan's.
"""

from __future__ import annotations

import dataclasses
from typing import Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

from lst_fast import ops
from lst_fast.backends.confidence import class_probability
from lst_fast.errors import InputError
from lst_fast.walk.graph_replay import GraphReplay
from lst_fast.walk.observers import WalkObserver
from lst_fast.walk.settings import LSTSettings
from lst_fast.walk.state import Forward, WalkConstants, WalkState


@dataclasses.dataclass(frozen=True)
class Grid:
    """The values a half-precision input can hold: every iterate is rounded to `dtype` and kept within the
    bounds rounded inward, so the image returned (in `dtype`) is exactly the one the model judged."""

    dtype: torch.dtype
    lo: float
    hi: float

    @classmethod
    def of(cls, dtype: torch.dtype, bounds: Tuple[float, float]) -> Optional["Grid"]:
        """The grid of a 16-bit input dtype; None for float32/float64 (the walk's own precision)."""
        if dtype not in (torch.float16, torch.bfloat16):
            return None
        lo, hi = (torch.tensor(b, dtype=torch.float64).to(dtype) for b in bounds)
        if float(lo) < bounds[0]:
            lo = _next_toward(lo, 1)
        if float(hi) > bounds[1]:
            hi = _next_toward(hi, -1)
        return cls(dtype, float(lo), float(hi))

    def __call__(self, images: Tensor) -> Tensor:
        """images rounded to the grid (in their own dtype, in place where possible)."""
        return images.copy_(images.to(self.dtype)).clamp_(self.lo, self.hi)


def _next_toward(value: Tensor, direction: int) -> Tensor:
    """The next 16-bit float after `value` (a 0-d float16/bfloat16) up (+1) or down (-1)."""
    bits = value.reshape(1).view(torch.int16)
    if float(value) == 0:
        step = torch.tensor([1], dtype=torch.int16).view(value.dtype)
        return step[0] if direction > 0 else -step[0]
    same_sign = (float(value) > 0) == (direction > 0)
    return (bits + (1 if same_sign else -1)).view(value.dtype)[0]


def forward_backward(forward: Forward, x: Tensor, label: Tensor, layout: torch.memory_format) -> Tuple[Tensor, Tensor]:
    """Logits at x and the gradient of the summed cross-entropy for `label` with respect to x."""
    x = x.detach().requires_grad_(True)
    with torch.enable_grad():
        logits = forward(x)
        if isinstance(logits, Tensor) and not logits.requires_grad:
            raise InputError(
                "the model's output does not depend differentiably on its input (a detached or "
                "integer output, or one computed outside autograd); LST needs the gradient with "
                "respect to the input images"
            )
        logits = logits.to(x.dtype)
        loss = F.cross_entropy(logits, label, reduction="sum")
        (grad,) = torch.autograd.grad(loss, x)  # parameters' .grad stay untouched
    # Autograd may hand back an expanded or otherwise strided gradient; the ops want x's layout.
    return logits.detach(), grad.contiguous(memory_format=layout)


def start_state(forward: Forward, start: Tensor, label: Tensor, layout: torch.memory_format) -> WalkState:
    """x at the (noisy) start, D = 0, and the gradient and confidence at x."""
    x = start.clone(memory_format=torch.preserve_format)
    logits, grad = forward_backward(forward, x, label, layout)
    return WalkState(
        x=x,
        grad=grad,
        adv=torch.zeros_like(x),
        confidence=class_probability(logits, label),
        accepted_steps=torch.zeros(x.shape[0], dtype=torch.long, device=x.device),
    )


def walk(
    forward: Forward,
    fixed: WalkConstants,
    state: WalkState,
    settings: LSTSettings,
    layout: torch.memory_format,
    replay: Optional[GraphReplay] = None,
    observers: Sequence[WalkObserver] = (),
    grid: Optional[Grid] = None,
) -> None:
    """LST: `settings.iterations` steps from `state`, in place; each observer's `stepped(i, state)` runs
    after iteration i. With a `grid` (half-precision input) each candidate is rounded onto it before it
    is judged. With a `replay`, the iteration is replayed from a CUDA graph once captured."""

    def iteration() -> None:
        # v = x_t - x;  v_perp = v - (<g, v> / <g, g>) g;  D = clamp(D + (eps / 2) g, -eps, eps);
        # candidate = clamp(x + eta v_perp - D, lo, hi)   (D updated in place, accepted or not)
        candidate = ops.orthogonal_step(
            state.x,
            fixed.target,
            state.grad,
            state.adv,
            step_size=settings.step_size,
            adv_step_size=settings.adv_step_size,
            bounds=settings.bounds,
            backend=settings.backend,
        )
        if grid is not None:
            candidate = grid(candidate)
        # One forward+backward at the candidate: its confidence decides, its gradient is the next one.
        cand_logits, cand_grad = forward_backward(forward, candidate, fixed.label, layout)
        # Where p0 - p(candidate) < delta: x, g and p take the candidate's (in place).
        accepted = ops.confidence_accept(
            cand_logits,
            fixed.label,
            fixed.p0,
            settings.threshold,
            state.x,
            candidate,
            state.grad,
            cand_grad,
            state.confidence,
            backend=settings.backend,
        )
        state.accepted_steps.add_(accepted)

    run = iteration if replay is None else replay.runner(iteration, settings.iterations)
    for i in range(1, settings.iterations + 1):
        run()
        for observer in observers:
            observer.stepped(i, state)
