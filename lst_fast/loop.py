"""The LST loop on one batch (docs/ALGORITHM.md section 1), with one forward+backward per iteration.

The paper's loop evaluates the model twice per iteration: forward+backward at x for the gradient, then a
forward at the candidate for the acceptance test. Here the candidate's forward+backward serves both: its
logits decide acceptance and, when accepted, its gradient is the next iteration's; when rejected, the
gradient at x is still the one in hand. The iterates are the same (bit for bit in fp32 on the CPU).

`walk` is the algorithm, top to bottom; `traverse_batch` sets up its state, hands it the observers (the
recorder, the progress bar and the bf16 end check, lst_fast.walk_observers and lst_fast.prepared_model)
and reports around it. lst_fast.graph_replay replays one iteration from a CUDA graph (opt-in).
Everything here works on one batch of tensors already on the device, in the working dtype and layout;
splitting a set into batches is lst_fast.batching's job.
"""

from __future__ import annotations

import dataclasses
import warnings
from typing import Callable, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

from lst_fast import ops, validation
from lst_fast.graph_replay import GraphReplay
from lst_fast.prepared_model import Checkpoints
from lst_fast.reference import class_probability
from lst_fast.result import TraversalResult
from lst_fast.settings import LSTSettings
from lst_fast.walk_observers import ProgressReport, Recorder, WalkObserver
from lst_fast.walk_state import Targets, WalkState

Forward = Callable[[Tensor], Tensor]  # images in [lo, hi] -> logits (normalization included)


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
            raise ValueError(
                "the model's output does not depend differentiably on its input (a detached or "
                "integer output, or one computed outside autograd); LST needs the gradient with "
                "respect to the input images"
            )
        logits = logits.to(x.dtype)
        loss = F.cross_entropy(logits, label, reduction="sum")
        (grad,) = torch.autograd.grad(loss, x)  # parameters' .grad stay untouched
    # Autograd may hand back an expanded or otherwise strided gradient; the ops want x's layout.
    return logits.detach(), grad.contiguous(memory_format=layout)


def check_logits(logits: Tensor, n: int) -> None:
    if not isinstance(logits, Tensor) or logits.dim() != 2 or logits.shape[0] != n:
        got = tuple(logits.shape) if isinstance(logits, Tensor) else type(logits).__name__
        raise ValueError(f"model must return logits of shape ({n}, num_classes), got {got}")
    if not logits.is_floating_point():
        raise ValueError(
            f"model must return floating-point logits (autograd differentiates only those), got {logits.dtype}"
        )
    if not bool(torch.isfinite(logits).all()):
        raise ValueError("model returned NaN or Inf logits for the source images x")


def warn_if_probabilities(logits: Tensor) -> None:
    """Once per call: outputs that are already probabilities (every row >= 0, summing to 1) are taken as
    logits, whose softmax is then nearly flat."""
    if (
        logits.numel()
        and bool((logits >= 0).all())
        and bool(
            torch.allclose(logits.double().sum(1), logits.new_ones(logits.shape[0], dtype=torch.float64), atol=1e-4)
        )
    ):
        warnings.warn(
            "the model's outputs look like probabilities (every row is non-negative and sums to 1); "
            "LST expects logits and applies softmax itself: return the logits",
            UserWarning,
            stacklevel=4,
        )


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
    fixed: Targets,
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


@dataclasses.dataclass
class Models:
    """The model callables one traversal uses (all normalize first)."""

    walk: Forward  # what the loop runs (bf16: the working copy, maybe compiled)
    report: Optional[Forward]  # bf16: the model as given, for labels and reported confidences; fp32: None
    # The walk's model without torch.compile, for its no-grad forwards (the first logits, the recorder):
    # compiled, each would compile a second graph (no-grad) beside the walk's. None: `walk` itself.
    no_grad: Optional[Forward] = None


def traverse_batch(
    models: Models,
    source: Tensor,
    start: Tensor,
    target: Tensor,
    label: Optional[Tensor],
    target_label: Optional[Tensor],
    settings: LSTSettings,
    layout: torch.memory_format,
    output_dtype: torch.dtype,
    replay: Optional[GraphReplay] = None,
    bar=None,
) -> TraversalResult:
    """LST on one batch: p0 and the labels on the clean source, the walk from `start`, and its report."""
    n, device = source.shape[0], source.device
    plain = models.no_grad or models.walk
    with torch.no_grad():
        logits0 = plain(source)
        check_logits(logits0, n)
        reported0 = logits0 if models.report is None else models.report(source)
    prediction = reported0.argmax(1)
    source_correct = torch.ones(n, dtype=torch.bool, device=device) if label is None else prediction == label
    label = prediction if label is None else label
    fixed = Targets(target=target, label=label, p0=class_probability(logits0, label))  # p0 float64
    grid = Grid.of(output_dtype, settings.bounds)
    if grid is not None:
        start = grid(start.clone(memory_format=torch.preserve_format))
    state = start_state(models.walk, start, label, layout)

    recorder = None
    if settings.record_every:
        if target_label is None:
            with torch.no_grad():
                target_label = (models.report or plain)(target).argmax(1)
        target_label = validation.check_label(target_label, n, logits0.shape[1], device, name="target_label")
        recorder = Recorder(
            settings.record_every,
            settings.iterations,
            plain,
            target_label,
            settings.record_device or device,
            state,
        )
    if replay is not None:
        fixed, state = replay.adopt(fixed, state)
    check = None
    if models.report is not None:  # the walk judges with the bf16 copy: keep what the model as given accepts
        check = Checkpoints(
            models.report, state, label, class_probability(reported0, label), settings.threshold, settings.iterations
        )
    progress = None if bar is None else ProgressReport(bar, n, settings.iterations)
    observers = [o for o in (check, recorder, progress) if o is not None]

    walk(models.walk, fixed, state, settings, layout, replay=replay, observers=observers, grid=grid)

    x, accepted_steps = state.x, state.accepted_steps
    final_confidence, initial_confidence = state.confidence, fixed.p0
    if check is not None:  # report what the model as given says of the end points it accepted (new tensors)
        x, accepted_steps, final_confidence = check.finish(state)
        initial_confidence = check.p0
    elif replay is not None:  # the replay's tensors serve the next batch of this shape: copy this one's out
        x, accepted_steps = x.clone(memory_format=torch.preserve_format), accepted_steps.clone()
        final_confidence, initial_confidence = final_confidence.clone(), initial_confidence.clone()
    result = TraversalResult(
        images=x.to(output_dtype),
        label=label,
        initial_confidence=initial_confidence.float(),
        confidence=final_confidence.float(),
        accepted_steps=accepted_steps,
        source_correct=source_correct,
    )
    if recorder is not None:
        traces = recorder.traces()
        result.trace_iterations = traces["trace_iterations"]
        result.trace_confidence = traces["trace_confidence"]
        result.trace_target_confidence = traces["trace_target_confidence"]
        result.trace_images = traces["trace_images"].to(output_dtype)
    return result
