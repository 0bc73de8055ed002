"""One traversal call's plan, made once per call, and LST on each of its batches.

`Inputs` are the call's images as the walk reads them. `CallPlan.build` adds what the model tells: the
precision's strategy (lst_fast.walk.precision), the start noise, the checked labels, the 16-bit `Grid`, the
CUDA-graph replay and the batch size. `CallPlan.traverse_batch` then runs one batch: start, walk,
finish, result. The algorithm itself is lst_fast.walk.loop's; splitting the set into batches is
lst_fast.walk.batching's.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Dict, Optional, cast

import torch
from torch import Tensor

from lst_fast.backends.confidence import class_probability
from lst_fast.walk import batching, loop, runtime, validation
from lst_fast.walk.graph_replay import GraphReplay
from lst_fast.walk.observers import EndCheck, ProgressReport, Recorder
from lst_fast.walk.precision import Precision, for_call
from lst_fast.walk.result import TraversalResult
from lst_fast.walk.settings import LSTSettings
from lst_fast.walk.state import Forward, WalkConstants, WalkState


@dataclasses.dataclass(frozen=True)
class Inputs:
    """The call's images as the walk reads them: detached copies in the working dtype (float64 stays,
    every other dtype works in float32) and in x's memory layout (contiguous or channels-last), the
    target materialized to x's shape; the normalization checked against the channels."""

    source: Tensor
    target: Tensor
    layout: torch.memory_format
    output_dtype: torch.dtype  # x's own: the dtype of the returned images
    norm: runtime.Normalization

    @classmethod
    def of(cls, x: Tensor, y: Tensor, settings: LSTSettings) -> "Inputs":
        work_dtype = torch.float64 if x.dtype == torch.float64 else torch.float32
        layout = (
            torch.channels_last
            if (x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous())
            else torch.contiguous_format
        )
        source = x.detach().to(dtype=work_dtype, memory_format=layout, copy=True)
        target = y.detach().to(work_dtype).expand_as(source).contiguous(memory_format=layout)
        norm = validation.normalization(
            settings.mean, settings.std, channels=source.shape[1], device=x.device, dtype=source.dtype
        )
        return cls(source, target, layout, x.dtype, norm)

    def __len__(self) -> int:
        return self.source.shape[0]


@dataclasses.dataclass(frozen=True)
class CallPlan:
    """Everything one call decides before its first batch."""

    settings: LSTSettings
    inputs: Inputs
    precision: Precision
    start: Tensor  # clamp(x + U(-a, a)), drawn for the whole set at once, so batching does not change it
    label: Optional[Tensor]  # checked; None: each batch takes the (reported) prediction on its sources
    target_label: Optional[Tensor]  # checked; None: the prediction on the targets (when recording)
    grid: Optional[loop.Grid]  # a 16-bit x's values (see loop.Grid); None for float32/float64
    replay: Optional[GraphReplay]  # graph=True on a CUDA device
    batch_size: int
    config: Dict[str, Any]  # the result's config, less the batch size used

    @classmethod
    def build(
        cls,
        model: torch.nn.Module,
        settings: LSTSettings,
        inputs: Inputs,
        label: Optional[Tensor],
        target_label: Optional[Tensor],
        generator: Optional[torch.Generator],
        config: Dict[str, Any],
    ) -> "CallPlan":
        """The plan for a non-empty call. The model first runs here: prepared for the precision, then
        checked on a few source images (validation.check_model_output), which tell the class count the
        labels are checked against."""
        s, n, device = settings, len(inputs), inputs.source.device
        precision = for_call(model, s, inputs.source, inputs.norm)
        start = _start(inputs.source, inputs.layout, s, generator)
        classes = validation.check_model_output(model, precision.eager_forward, inputs.source).shape[1]
        label = validation.check_label(label, n, classes, device)
        target_label = validation.check_label(target_label, n, classes, device, name="target_label")
        size = s.batch_size and min(s.batch_size, n)
        if size is None:  # measured with the uncompiled copy, so the probes' shapes trigger no compile
            probe = functools.partial(_probe, precision.eager_forward, start, inputs.layout)
            size = batching.automatic_batch_size(probe, n, device, _walk_bytes_per_image(inputs.source, s))
        grid = loop.Grid.of(inputs.output_dtype, s.bounds)
        replay = _graph_replay(device) if s.graph else None
        config = {**config, "model_copy": precision.model_copy}
        return cls(s, inputs, precision, start, label, target_label, grid, replay, size, config)

    def traverse_batch(self, part: slice, bar: Any = None) -> TraversalResult:
        """LST on the call's images `part`, as an attack's forward reads: start (p0 and the labels on the
        clean source, the walk's state at the start), walk, finish (the precision's end points), result."""
        s, precision, layout = self.settings, self.precision, self.inputs.layout
        source, start, target = (t[part] for t in (self.inputs.source, self.start, self.inputs.target))
        label, target_label = (None if t is None else t[part] for t in (self.label, self.target_label))
        n = source.shape[0]

        logits0, reported0 = precision.source_logits(source)
        prediction = reported0.argmax(1)
        source_correct = torch.ones(n, dtype=torch.bool, device=source.device) if label is None else prediction == label
        label = prediction if label is None else label
        fixed = WalkConstants(target=target, label=label, p0=class_probability(logits0, label))  # p0 float64
        state = loop.start_state(precision.walk_forward, self._on_grid(start), label, layout)
        recorder = self._recorder(state, target, target_label, logits0.shape[1])
        end = precision.end(state, fixed, reported0, s, copy_out=self.replay is not None)
        progress = None if bar is None else ProgressReport(bar, n, s.iterations)
        if self.replay is not None:
            fixed, state = self.replay.adopt(fixed, state)

        observers = [o for o in (end, recorder, progress) if o is not None]
        loop.walk(
            precision.walk_forward,
            fixed,
            state,
            s,
            layout=layout,
            replay=self.replay,
            observers=observers,
            grid=self.grid,
        )

        images, accepted_steps, confidence = end.finish(state)
        result = TraversalResult(
            images=images.to(self.inputs.output_dtype),
            label=label,
            initial_confidence=end.p0.float(),
            confidence=confidence.float(),
            accepted_steps=accepted_steps,
            source_correct=source_correct,
        )
        return self._with_traces(result, recorder)

    def _on_grid(self, start: Tensor) -> Tensor:
        return start if self.grid is None else self.grid(start.clone(memory_format=torch.preserve_format))

    def _recorder(
        self, state: WalkState, target: Tensor, target_label: Optional[Tensor], classes: int
    ) -> Optional[Recorder]:
        """The traces' recorder (record_every > 0); the target labels default to the reported prediction on
        the targets."""
        s, n, device = self.settings, state.x.shape[0], state.x.device
        if not s.record_every:
            return None
        if target_label is None:
            with torch.no_grad():
                target_label = self.precision.report_forward(target).argmax(1)
        target_label = cast(Tensor, validation.check_label(target_label, n, classes, device, name="target_label"))
        return Recorder(
            every=s.record_every,
            last=s.iterations,
            forward=self.precision.eager_forward,
            target_label=target_label,
            device=s.record_device or device,
            state=state,
        )

    def _with_traces(self, result: TraversalResult, recorder: Optional[Recorder]) -> TraversalResult:
        if recorder is not None:
            traces = recorder.traces()
            result.trace_iterations = traces["trace_iterations"]
            result.trace_confidence = traces["trace_confidence"]
            result.trace_target_confidence = traces["trace_target_confidence"]
            result.trace_images = traces["trace_images"].to(self.inputs.output_dtype)
        return result


def _start(
    source: Tensor, layout: torch.memory_format, settings: LSTSettings, generator: Optional[torch.Generator]
) -> Tensor:
    """clamp(x + U(-a, a)) for the whole set."""
    lo, hi = settings.bounds
    start = source.clone(memory_format=torch.preserve_format)
    a = settings.init_noise
    if a == 0:
        return start.clamp(lo, hi)
    noise = torch.rand(start.shape, generator=generator, device=start.device, dtype=start.dtype)
    noisy: Tensor = (start + (noise * 2 - 1) * a).clamp(lo, hi).contiguous(memory_format=layout)
    return noisy


def _graph_replay(device: torch.device) -> Optional[GraphReplay]:
    """graph=True: CUDA graphs on a CUDA device; on other devices it changes nothing."""
    return GraphReplay(device) if device.type == "cuda" else None


def _walk_bytes_per_image(source: Tensor, s: LSTSettings) -> int:
    """What a walk with settings `s` holds per image on the device besides one forward+backward: the
    automatic GPU batch size counts it (lst_fast.walk.batching)."""
    records_here = s.record_every > 0 and (s.record_device is None or s.record_device.type == source.device.type)
    return batching.walk_bytes_per_image(
        source[0].numel() * source.element_size(),
        kept_iterates=EndCheck.copies_held(s.iterations) if s.precision == "bf16" else 0,
        graph=s.graph,
        recorded=Recorder.records(s.record_every, s.iterations) if records_here else 0,
    )


def _probe(forward: Forward, images: Tensor, layout: torch.memory_format, k: int) -> None:
    """One forward+backward on the first k images (for the automatic batch size)."""
    with torch.no_grad():
        label = forward(images[:k]).argmax(1)
    loop.forward_backward(forward, images[:k], label, layout)
