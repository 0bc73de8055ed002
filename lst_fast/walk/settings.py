"""The settings of a Level Set Traversal: a frozen, validated dataclass.

`LSTSettings` is the one place the traversal's settings, their defaults, their checks and their help text
are written. `LevelSetTraversal`, `traverse`, the evaluation (`lst_fast.evaluation.config.EvalConfig.lst`),
the demo and the command line (its `add_settings_arguments`) all take it. It is frozen: a changed setting
is a new object (`settings.replace(step_size=...)`), and every new object runs `validate()`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Dict, Optional, Tuple

import torch

from lst_fast.backends.names import BACKENDS, check_backend
from lst_fast.checks import check_count, check_optional_count
from lst_fast.errors import InputError, InputTypeError
from lst_fast.walk import validation

PRECISIONS = ("fp32", "bf16")


def check_precision(precision: str, compile_model: bool = False) -> None:
    """precision is one of PRECISIONS; compile_model only with bf16 (compiled kernels round differently,
    so exact mode never compiles)."""
    if precision not in PRECISIONS:
        raise InputError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if compile_model and precision != "bf16":
        raise InputError("compile_model=True needs precision='bf16'; exact mode (fp32) never compiles")


def field_help(text: str, **extra: Any) -> Dict[str, Any]:
    """A dataclass field's metadata: its help text (the command line's flag help) and extras such as
    `choices` or `negated` (lst_fast.cli.arguments reads them)."""
    return {"help": text, **extra}


@dataclass(frozen=True)
class LSTSettings:
    """How a Level Set Traversal runs (the algorithm, and every field's meaning: the Algorithm page,
    section 1).

    Build it with keywords, e.g. ``LSTSettings(step_size=5e-2, precision="bf16")``; it is frozen, and every
    field is checked on construction and on `replace` (`ValueError` or `TypeError` naming the field).
    """

    step_size: float = field(
        default=1e-2, metadata=field_help("eta: the step along the part of (target - x) orthogonal to the gradient")
    )
    iterations: int = field(default=400, metadata=field_help("T: the number of steps tried"))
    threshold: float = field(
        default=0.2,
        metadata=field_help("delta: a step is accepted while p0 - p < delta for the source-class confidence p"),
    )
    adv_step_size: float = field(
        default=2e-3,
        metadata=field_help("eps: step of the accumulated adversarial term (bounded by eps); 0 disables it"),
    )
    init_noise: float = field(
        default=2 / 255, metadata=field_help("a: the start is clamp(x + U(-a, a)); 0 starts at x")
    )
    bounds: Tuple[float, float] = field(
        default=(0.0, 1.0), metadata=field_help("(lo, hi): the valid image range; every iterate stays inside")
    )
    mean: Optional[Tuple[float, ...]] = field(
        default=None, metadata=field_help("per-channel normalization applied inside: the model sees (x - mean) / std")
    )
    std: Optional[Tuple[float, ...]] = field(default=None, metadata=field_help("see mean"))
    precision: str = field(
        default="fp32",
        metadata=field_help(
            "fp32: exact (the algorithm to the bit, TF32 off); bf16: the model runs as a bfloat16 copy with "
            "BatchNorm folded and channels-last memory, all LST arithmetic stays fp32",
            choices=PRECISIONS,
        ),
    )
    batch_size: Optional[int] = field(
        default=None,
        metadata=field_help(
            "images per batch; default automatic (GPU: what free memory holds; CPU: cache-sized batches)"
        ),
    )
    compile_model: bool = field(
        default=False, metadata=field_help("with precision bf16: run the working copy through torch.compile")
    )
    graph: bool = field(
        default=False, metadata=field_help("CUDA: replay each iteration from a CUDA graph (the same iterates as eager)")
    )
    record_every: int = field(
        default=0, metadata=field_help("when > 0, record the iterate and its confidences every that many iterations")
    )
    record_device: Optional[torch.device] = field(
        default=None, metadata=field_help("where recorded images go (e.g. cpu); default the input's device")
    )
    progress: bool = field(default=False, metadata=field_help("show a progress bar"))
    backend: str = field(
        default="auto",
        metadata=field_help(
            "auto: compiled kernels where available; native: require them; reference: pure PyTorch", choices=BACKENDS
        ),
    )

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Check every field; store the canonical form (floats, tuples, torch.device)."""

        def put(name: str, value: object) -> None:
            object.__setattr__(self, name, value)  # the dataclass is frozen

        put("step_size", validation.check_positive("step_size", self.step_size))
        put("iterations", check_count("iterations", self.iterations))
        put("threshold", validation.check_non_negative("threshold", self.threshold))
        put("adv_step_size", validation.check_non_negative("adv_step_size", self.adv_step_size))
        put("init_noise", validation.check_non_negative("init_noise", self.init_noise))
        put("bounds", validation.check_bounds(self.bounds))
        for name in ("mean", "std"):
            put(name, validation.channel_values(name, getattr(self, name)))
        put("batch_size", check_optional_count("batch_size", self.batch_size, 1, none_means="automatic"))
        for name in ("compile_model", "graph"):
            if not isinstance(getattr(self, name), bool):
                raise InputTypeError(f"{name} must be True or False, got {getattr(self, name)!r}")
        check_precision(self.precision, self.compile_model)
        put("record_every", check_count("record_every", self.record_every))
        put("record_device", None if self.record_device is None else torch.device(self.record_device))
        put("progress", bool(self.progress))
        check_backend(self.backend)

    def replace(self, **changes: Any) -> "LSTSettings":
        """A copy with some fields changed (validated); unknown names raise TypeError.

        Args:
            **changes: new values of fields, by name.

        Returns:
            A new, checked `LSTSettings`; this one is unchanged.
        """
        return dataclasses.replace(self, **changes)

    @classmethod
    def from_keywords(cls, base: Optional["LSTSettings"] = None, **keywords: Any) -> "LSTSettings":
        """`base` (default: the defaults) with `keywords` applied; names an unknown keyword."""
        unknown = sorted(set(keywords) - FIELDS)
        if unknown:
            raise InputTypeError(f"unknown LST setting(s) {unknown}; the settings are {sorted(FIELDS)}")
        base = cls() if base is None else base
        if not isinstance(base, LSTSettings):
            raise InputTypeError(f"settings must be an LSTSettings, got {type(base).__name__}")
        return base.replace(**keywords) if keywords else base

    def config(self) -> Dict[str, Any]:
        """The settings as plain JSON-able values (record_device and progress do not change results and
        are left out)."""
        out = {
            f.name: getattr(self, f.name)
            for f in dataclasses.fields(self)
            if f.name not in ("record_device", "progress")
        }
        for name in ("bounds", "mean", "std"):
            out[name] = None if out[name] is None else list(out[name])
        return out


FIELDS = frozenset(f.name for f in dataclasses.fields(LSTSettings))


def strip_record_every(iterations: int) -> int:
    """record_every for the path strips of the demo and `lst-fast run`: eight recorded iterates per walk."""
    return max(1, iterations // 8)


# The evaluation and the demo walk with a larger step than the paper's ImageNet runs, so that 28x28 walks get
# close to their targets (docs/fashion-mnist.md); otherwise the paper's settings.
EVALUATION_SETTINGS = LSTSettings(step_size=5e-2)
