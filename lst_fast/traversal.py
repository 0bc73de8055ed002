"""The public entry points of Level Set Traversal: `LevelSetTraversal` (configure once, call on batches) and
`traverse` (one call). They check the input, prepare the model for the precision, draw the start, split
the set into batches (lst_fast.batching) and run the loop on each (lst_fast.loop, where the algorithm is).
"""

from __future__ import annotations

import functools
from typing import Any, Dict, Optional, Tuple

import torch
from torch import Tensor

from lst_fast import batching, loop, prepared_model, runtime, validation
from lst_fast.graph_replay import GraphReplay
from lst_fast.result import TraversalResult
from lst_fast.settings import LSTSettings
from lst_fast.version import __version__
from lst_fast.walk_observers import Recorder


class LevelSetTraversal:
    """Configure once, call on batches: ``LevelSetTraversal(model, iterations=400)(x, y)``.

    Args:
        model: classifier returning logits for images in `bounds` (after the optional mean/std). It is
            never modified (bf16 mode runs a working copy built per call; see lst_fast.prepared_model).
        settings: an `LSTSettings` (default: its defaults); keywords override single fields, e.g.
            ``LevelSetTraversal(model, step_size=5e-2, precision="bf16")``. The fields and what they mean:
            `LSTSettings` (lst_fast.settings). The settings are frozen: `lst.settings` is read-only, and
            `lst.with_settings(...)` makes a configured copy.
    """

    _model: torch.nn.Module  # set once in __init__ (the object is read-only afterwards)
    _settings: LSTSettings

    def __init__(self, model: torch.nn.Module, settings: Optional[LSTSettings] = None, **overrides: Any) -> None:
        validation.check_model(model)
        object.__setattr__(self, "_model", model)
        object.__setattr__(self, "_settings", LSTSettings.from_keywords(settings, **overrides))

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError(
            f"LevelSetTraversal is read-only (setting {name!r}); the settings are checked once "
            "when made: use lst.with_settings(...) for a changed copy"
        )

    @property
    def model(self) -> torch.nn.Module:
        return self._model

    @property
    def settings(self) -> LSTSettings:
        return self._settings

    def with_settings(self, **overrides: Any) -> "LevelSetTraversal":
        return LevelSetTraversal(self._model, self._settings, **overrides)

    def config(self) -> Dict[str, Any]:
        """The settings, as plain JSON-able values."""
        return self._settings.config()

    def __repr__(self) -> str:
        settings = ", ".join(f"{k}={v!r}" for k, v in self.config().items())
        return f"{type(self).__name__}(model={type(self._model).__name__}, {settings})"

    def __call__(
        self,
        x: Tensor,
        y: Tensor,
        *,
        label: Optional[Tensor] = None,
        target_label: Optional[Tensor] = None,
        generator: Optional[torch.Generator] = None,
    ) -> TraversalResult:
        """Traverse from each source image in x toward its target image in y.

        Args:
            x: source images (N, C, H, W) in `bounds`.
            y: target images (N, C, H, W), or one image (C, H, W) for every source.
            label: class whose confidence is held (N,); default the model's prediction on x.
            target_label: class of the targets, for the recorded target confidence; default the model's
                prediction on y (computed only when record_every > 0).
            generator: random generator for the initial noise (on x's device), for reproducible runs.
        """
        s = self._settings
        validation.check_images(x, y, s.bounds)
        validation.check_generator(generator, x.device)
        with runtime.running(self._model, s.precision, x.device), torch.inference_mode(False):
            return self._traverse(x, y, label, target_label, generator)

    def _traverse(
        self,
        x_in: Tensor,
        y_in: Tensor,
        label: Optional[Tensor],
        target_label: Optional[Tensor],
        generator: Optional[torch.Generator],
    ) -> TraversalResult:
        s = self._settings
        n, device = x_in.shape[0], x_in.device
        config = {**s.config(), "lst_fast": __version__, "torch": torch.__version__, "device": str(device)}
        # Working copies in x's memory layout (contiguous or channels-last), the target materialized.
        work_dtype = torch.float64 if x_in.dtype == torch.float64 else torch.float32
        layout = (
            torch.channels_last
            if (x_in.is_contiguous(memory_format=torch.channels_last) and not x_in.is_contiguous())
            else torch.contiguous_format
        )
        source = x_in.detach().to(dtype=work_dtype, memory_format=layout, copy=True)
        target = y_in.detach().to(work_dtype).expand_as(source).contiguous(memory_format=layout)
        # What can be checked without running the model is checked for an empty batch too.
        norm = validation.normalization(s.mean, s.std, source.shape[1], device, source.dtype)
        if n == 0:
            for name, value in (("label", label), ("target_label", target_label)):
                validation.check_label(value, 0, 1, device, name=name)
            return TraversalResult.empty(x_in, config)

        models, probe_forward, config["model_copy"] = self._models(source, norm)
        start = self._start(source, layout, generator)
        probe = source[:8].clone()  # a few images tell the class count, so labels are checked before any walk
        version = probe._version
        with torch.no_grad():
            first = probe_forward(probe)
        if probe._version != version:
            raise ValueError(
                f"model ({type(self._model).__name__}) changes its input in place; LST hands it the "
                "iterate itself: make that operation out of place, or pass mean/std (the model then "
                "gets a normalized copy)"
            )
        loop.check_logits(first, probe.shape[0])
        loop.warn_if_probabilities(first)
        label = validation.check_label(label, n, first.shape[1], device)
        if target_label is not None:
            target_label = validation.check_label(target_label, n, first.shape[1], device, name="target_label")

        size = s.batch_size and min(s.batch_size, n)
        if size is None:  # measured with the uncompiled copy, so the probes' shapes trigger no compile
            probe_walk = functools.partial(_probe, probe_forward, start, layout)
            size = batching.automatic_batch_size(probe_walk, n, device, _walk_bytes_per_image(source, s))
        replay = _graph_replay(device) if s.graph else None

        def run(part: slice, bar: Any) -> TraversalResult:
            return loop.traverse_batch(
                models,
                source[part],
                start[part],
                target[part],
                None if label is None else label[part],
                None if target_label is None else target_label[part],
                s,
                layout,
                x_in.dtype,
                replay,
                bar,
            )

        parts, config["batch_size_used"] = batching.run_in_batches(
            run,
            n,
            size,
            automatic=s.batch_size is None,
            device=device,
            steps_per_batch=s.iterations,
            progress=s.progress,
        )
        return TraversalResult.concatenate(parts, config)

    def _models(self, source: Tensor, norm: runtime.Normalization) -> Tuple[loop.Models, loop.Forward, Dict[str, Any]]:
        """The walk's and the report's model callables, the probe's (never compiled) and the copy's description."""
        s = self._settings
        prepared = prepared_model.prepare(
            self._model, s.precision, runtime.normalize(source[:4], norm), compile_model=s.compile_model
        )
        # bf16: labels and the reported confidences come from the model as given, in its own precision.
        report = (
            None
            if s.precision == "fp32"
            else runtime.normalized(prepared_model.PreparedModel.original(self._model, source.dtype), norm)
        )
        eager = runtime.normalized(prepared.eager(), norm)
        models = loop.Models(walk=runtime.normalized(prepared, norm), report=report, no_grad=eager)
        return models, eager, prepared.describe()

    def _start(self, source: Tensor, layout: torch.memory_format, generator: Optional[torch.Generator]) -> Tensor:
        """clamp(x + U(-a, a)), drawn for the whole set at once, so batching does not change it."""
        lo, hi = self._settings.bounds
        start = source.clone(memory_format=torch.preserve_format)
        a = self._settings.init_noise
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
    automatic GPU batch size counts it (lst_fast.batching)."""
    records_here = s.record_every > 0 and (s.record_device is None or s.record_device.type == source.device.type)
    return batching.walk_bytes_per_image(
        source[0].numel() * source.element_size(),
        kept_iterates=prepared_model.Checkpoints.copies_held(s.iterations) if s.precision == "bf16" else 0,
        graph=s.graph,
        recorded=Recorder.records(s.record_every, s.iterations) if records_here else 0,
    )


def _probe(forward: loop.Forward, images: Tensor, layout: torch.memory_format, k: int) -> None:
    """One forward+backward on the first k images (for the automatic batch size)."""
    with torch.no_grad():
        label = forward(images[:k]).argmax(1)
    loop.forward_backward(forward, images[:k], label, layout)


def traverse(
    model: torch.nn.Module,
    x: Tensor,
    y: Tensor,
    settings: Optional[LSTSettings] = None,
    *,
    label: Optional[Tensor] = None,
    target_label: Optional[Tensor] = None,
    generator: Optional[torch.Generator] = None,
    **overrides: Any,
) -> TraversalResult:
    """Level Set Traversal from source images x toward target images y.

    `settings` (an `LSTSettings`) and keyword overrides of its fields configure it, as for
    `LevelSetTraversal`; `label`, `target_label` and `generator` are those of `LevelSetTraversal.__call__`.
    Returns a TraversalResult: the final images, which still get `label` (default: the model's
    prediction on x) with confidence within `threshold` of the clean source's, plus per-sample
    diagnostics, in batch order.
    """
    lst = LevelSetTraversal(model, settings, **overrides)
    return lst(x, y, label=label, target_label=target_label, generator=generator)
