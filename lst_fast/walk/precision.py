"""How each precision walks, reports and ends a walk: the strategy one call's plan holds.

Exact mode (precision="fp32", `ExactPrecision`) walks with the model itself in full fp32; its labels and
confidences are the walk's, and the walk's last iterate is what it returns (`FinalIterate`). bf16 mode
(`Bf16Precision`) walks with a bf16 working copy (lst_fast.walk.prepared_model), takes the labels and the
reported confidences from the model as given, in its own precision, and checks the end points with it
(`EndCheck`, which may walk a sample back). Which one a call uses is decided once, by `for_call`.
"""

from __future__ import annotations

from typing import Any, Dict, Protocol, Tuple

import torch
from torch import Tensor

from lst_fast.backends.confidence import class_probability
from lst_fast.walk import prepared_model, runtime, validation
from lst_fast.walk.observers import EndCheck, FinalIterate, WalkEnd
from lst_fast.walk.settings import LSTSettings
from lst_fast.walk.state import Forward, WalkConstants, WalkState


class Precision(Protocol):
    walk_forward: Forward  # what the walk runs
    eager_forward: Forward  # the walk's model never compiled, for no-grad and one-off forwards (checks, p0, recorder)
    report_forward: Forward  # what the labels and the reported confidences come from
    model_copy: Dict[str, Any]  # how the walk's model was prepared (the result's config["model_copy"])

    def source_logits(self, source: Tensor) -> Tuple[Tensor, Tensor]:
        """The walk's logits on the clean source (checked), and the reported ones."""

    def end(
        self, state: WalkState, fixed: WalkConstants, reported_logits: Tensor, settings: LSTSettings, copy_out: bool
    ) -> WalkEnd:
        """The batch's end of the walk; `copy_out`: a graph replay owns the state's memory."""


def _prepared(
    model: torch.nn.Module, settings: LSTSettings, source: Tensor, norm: runtime.Normalization
) -> prepared_model.PreparedModel:
    """The walk's model for the settings' precision, checked on a few of the (normalized) source images."""
    probe_images = runtime.normalize(source[:4], norm)
    return prepared_model.prepare(model, settings.precision, probe_images, compile_model=settings.compile_model)


def _checked_logits(forward: Forward, source: Tensor) -> Tensor:
    with torch.no_grad():
        logits = forward(source)
    validation.check_logits(logits, source.shape[0])
    return logits


class ExactPrecision:
    """precision="fp32": the model itself walks and reports; the walk's own end points are returned."""

    def __init__(self, forward: Forward, model_copy: Dict[str, Any]) -> None:
        self.walk_forward = self.eager_forward = self.report_forward = forward
        self.model_copy = model_copy

    @classmethod
    def prepare(
        cls, model: torch.nn.Module, settings: LSTSettings, source: Tensor, norm: runtime.Normalization
    ) -> "ExactPrecision":
        prepared = _prepared(model, settings, source, norm)
        return cls(runtime.normalized(prepared, norm), prepared.describe())

    def source_logits(self, source: Tensor) -> Tuple[Tensor, Tensor]:
        logits = _checked_logits(self.walk_forward, source)
        return logits, logits  # one model: one forward

    def end(
        self, state: WalkState, fixed: WalkConstants, reported_logits: Tensor, settings: LSTSettings, copy_out: bool
    ) -> WalkEnd:
        return FinalIterate(fixed.p0, copy=copy_out)


class Bf16Precision:
    """precision="bf16": a bf16 working copy walks (through torch.compile with compile_model); the model as
    given reports and checks the end points the walk reached."""

    def __init__(
        self, walk_forward: Forward, eager_forward: Forward, report_forward: Forward, model_copy: Dict[str, Any]
    ) -> None:
        self.walk_forward, self.eager_forward, self.report_forward = walk_forward, eager_forward, report_forward
        self.model_copy = model_copy

    @classmethod
    def prepare(
        cls, model: torch.nn.Module, settings: LSTSettings, source: Tensor, norm: runtime.Normalization
    ) -> "Bf16Precision":
        prepared = _prepared(model, settings, source, norm)
        report_forward = runtime.normalized(prepared_model.PreparedModel.original(model, source.dtype), norm)
        walk_forward, eager_forward = runtime.normalized(prepared, norm), runtime.normalized(prepared.eager(), norm)
        return cls(walk_forward, eager_forward, report_forward, prepared.describe())

    def source_logits(self, source: Tensor) -> Tuple[Tensor, Tensor]:
        if self.model_copy.get("compiled"):
            # p0 must come from the model the walk judges with. A no-grad call would make torch.compile
            # build a second graph; an input that asks for a gradient, as the walk's do, reuses the walk's.
            with torch.enable_grad():
                logits = self.walk_forward(source.detach().requires_grad_(True)).detach()
            validation.check_logits(logits, source.shape[0])
        else:
            logits = _checked_logits(self.walk_forward, source)
        with torch.no_grad():
            return logits, self.report_forward(source)

    def end(
        self, state: WalkState, fixed: WalkConstants, reported_logits: Tensor, settings: LSTSettings, copy_out: bool
    ) -> WalkEnd:
        # Its outputs are new tensors whether or not a graph replay owns the state.
        p0 = class_probability(reported_logits, fixed.label)
        return EndCheck(
            self.report_forward,
            state,
            label=fixed.label,
            p0=p0,
            threshold=settings.threshold,
            iterations=settings.iterations,
        )


STRATEGIES: Dict[str, Any] = {"fp32": ExactPrecision, "bf16": Bf16Precision}  # by settings.precision


def for_call(model: torch.nn.Module, settings: LSTSettings, source: Tensor, norm: runtime.Normalization) -> Precision:
    """The precision strategy of one call, its models prepared for `source` (the working copy of x)."""
    strategy: Precision = STRATEGIES[settings.precision].prepare(model, settings, source, norm)
    return strategy
