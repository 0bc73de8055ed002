"""The public entry points of Level Set Traversal: `LevelSetTraversal` (configure once, call on batches) and
`traverse` (one call). They check the input, make the call's plan (lst_fast.walk.call_plan: the precision, the
start, the batch size) and run it batch by batch (lst_fast.walk.batching; the algorithm is lst_fast.walk.loop's).
"""

from __future__ import annotations

from typing import Any, Dict, Optional

import torch
from torch import Tensor

from lst_fast.version import __version__
from lst_fast.walk import batching, call_plan, runtime, validation
from lst_fast.walk.result import TraversalResult
from lst_fast.walk.settings import LSTSettings


class LevelSetTraversal:
    """Configure once, call on batches: ``LevelSetTraversal(model, iterations=400)(x, y)``.

    Args:
        model: classifier returning logits (N, K) for images in `bounds` (after the optional mean/std). It
            is never modified (bf16 mode runs a working copy built per call).
        settings: an `LSTSettings` (default: its defaults); keywords override single fields, e.g.
            ``LevelSetTraversal(model, step_size=5e-2, precision="bf16")``. The fields and what they mean:
            `lst_fast.LSTSettings`. The settings are frozen: `lst.settings` is read-only, and
            `lst.with_settings(...)` makes a configured copy.
        **overrides: fields of `LSTSettings`, each replacing the one in `settings`.

    Raises:
        TypeError: `model` is not an `nn.Module`, or an override names no field.
        ValueError: a setting is out of its range (the message names it).
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
        """A copy with some settings changed, checked again.

        Args:
            **overrides: fields of `LSTSettings`.

        Returns:
            A new `LevelSetTraversal` of the same model; this one is unchanged.
        """
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

        Returns:
            A `TraversalResult` in batch order: `images` (N, C, H, W) on x's device and dtype, which the
            model still gives `label` with confidence above p0 - threshold once a step was accepted;
            `label`, `initial_confidence` (p0), `confidence`, `accepted_steps` and `source_correct` (N,);
            the traces (R, N, ...) when `record_every` > 0.

        Raises:
            TypeError: an argument of the wrong type (the message names it).
            ValueError: images, labels or the model's output of the wrong shape, range or kind.
        """
        s = self._settings
        validation.check_images(x, y, s.bounds)
        validation.check_generator(generator, x.device)
        with runtime.running(self._model, s.precision, x.device), torch.inference_mode(False):
            return self._traverse(x, y, label, target_label, generator)

    def _traverse(
        self,
        x: Tensor,
        y: Tensor,
        label: Optional[Tensor],
        target_label: Optional[Tensor],
        generator: Optional[torch.Generator],
    ) -> TraversalResult:
        s = self._settings
        config = {**s.config(), "lst_fast": __version__, "torch": torch.__version__, "device": str(x.device)}
        inputs = call_plan.Inputs.of(x, y, s)
        if len(inputs) == 0:  # what can be checked without running the model is checked for no images too
            for name, value in (("label", label), ("target_label", target_label)):
                validation.check_label(value, 0, 1, x.device, name=name)
            return TraversalResult.empty(x, config)
        plan = call_plan.CallPlan.build(
            self._model, s, inputs, label=label, target_label=target_label, generator=generator, config=config
        )
        parts, used = batching.run_in_batches(
            plan.traverse_batch,
            len(inputs),
            plan.batch_size,
            automatic=s.batch_size is None,
            device=x.device,
            steps_per_batch=s.iterations,
            progress=s.progress,
        )
        return TraversalResult.concatenate(parts, {**plan.config, "batch_size_used": used})


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

    The same as ``LevelSetTraversal(model, settings, **overrides)(x, y, ...)``.

    Args:
        model: classifier returning logits (N, K) for images in `bounds`; never modified.
        x: source images (N, C, H, W) in `bounds`.
        y: target images (N, C, H, W), or one image (C, H, W) for every source.
        settings: an `LSTSettings` (default: its defaults).
        label: class whose confidence is held (N,); default the model's prediction on x.
        target_label: class of the targets (N,), for the recorded target confidence; default the model's
            prediction on y (computed only when `record_every` > 0).
        generator: random generator for the initial noise (on x's device), for reproducible runs.
        **overrides: fields of `LSTSettings`, each replacing the one in `settings`.

    Returns:
        A `TraversalResult`, in batch order: the final images (N, C, H, W), which still get `label` with
        confidence within `threshold` of the clean source's, plus per-sample diagnostics (N,).
    """
    lst = LevelSetTraversal(model, settings, **overrides)
    return lst(x, y, label=label, target_label=target_label, generator=generator)
