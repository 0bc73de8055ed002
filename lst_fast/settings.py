"""The settings of a Level Set Traversal and of an evaluation: frozen, validated dataclasses.

`LSTSettings` is the one place the traversal's settings, their defaults, their checks and their help text
are written. `LevelSetTraversal`, `traverse`, the evaluation (`EvalConfig.lst`), the demo and the command
line (`lst_fast.cli.add_settings_arguments`) all take it. It is frozen: a changed setting is a new object
(`settings.replace(step_size=...)`), and every new object runs `validate()`.
"""
from __future__ import annotations

import dataclasses
import math
import numbers
from dataclasses import dataclass, field
from typing import Any, Dict, Optional, Tuple, Union

import torch

from lst_fast import validation
from lst_fast.ops import BACKENDS

PRECISIONS = ("fp32", "bf16")


def check_precision(precision: str, compile_model: bool = False) -> None:
    """precision is one of PRECISIONS; compile_model only with bf16 (compiled kernels round differently,
    so exact mode never compiles)."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if compile_model and precision != "bf16":
        raise ValueError("compile_model=True needs precision='bf16'; exact mode (fp32) never compiles")


def _help(text: str, **extra: Any) -> Dict[str, Any]:
    return {"help": text, **extra}


@dataclass(frozen=True)
class LSTSettings:
    """How a Level Set Traversal runs (the algorithm: docs/ALGORITHM.md section 1).

    Build it with keywords; every field is checked on construction and on `replace`.
    """

    step_size: float = field(default=1e-2, metadata=_help(
        "eta: the step along the part of (target - x) orthogonal to the gradient"))
    iterations: int = field(default=400, metadata=_help("T: the number of steps tried"))
    threshold: float = field(default=0.2, metadata=_help(
        "delta: a step is accepted while p0 - p < delta for the source-class confidence p"))
    adv_step_size: float = field(default=2e-3, metadata=_help(
        "eps: step of the accumulated adversarial term (bounded by eps); 0 disables it"))
    init_noise: float = field(default=2 / 255, metadata=_help(
        "a: the start is clamp(x + U(-a, a)); 0 starts at x"))
    bounds: Tuple[float, float] = field(default=(0.0, 1.0), metadata=_help(
        "(lo, hi): the valid image range; every iterate stays inside"))
    mean: Optional[Tuple[float, ...]] = field(default=None, metadata=_help(
        "per-channel normalization applied inside: the model sees (x - mean) / std"))
    std: Optional[Tuple[float, ...]] = field(default=None, metadata=_help("see mean"))
    precision: str = field(default="fp32", metadata=_help(
        "fp32: exact (the algorithm to the bit, TF32 off); bf16: the model runs as a bfloat16 copy with "
        "BatchNorm folded and channels-last memory, all LST arithmetic stays fp32", choices=PRECISIONS))
    batch_size: Optional[int] = field(default=None, metadata=_help(
        "images per batch; default automatic (GPU: what free memory holds; CPU: cache-sized batches)"))
    compile_model: bool = field(default=False, metadata=_help(
        "with precision bf16: run the working copy through torch.compile"))
    graph: bool = field(default=False, metadata=_help(
        "CUDA: replay each iteration from a CUDA graph (the same iterates as eager)"))
    record_every: int = field(default=0, metadata=_help(
        "when > 0, record the iterate and its confidences every that many iterations"))
    record_device: Optional[torch.device] = field(default=None, metadata=_help(
        "where recorded images go (e.g. cpu); default the input's device"))
    progress: bool = field(default=False, metadata=_help("show a progress bar"))
    backend: str = field(default="auto", metadata=_help(
        "auto: compiled kernels where available; native: require them; reference: pure PyTorch",
        choices=BACKENDS))

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Check every field; store the canonical form (floats, tuples, torch.device)."""
        put = lambda name, value: object.__setattr__(self, name, value)  # noqa: E731 (frozen)
        put("step_size", validation.check_positive("step_size", self.step_size))
        put("iterations", validation.check_count("iterations", self.iterations))
        put("threshold", validation.check_non_negative("threshold", self.threshold))
        put("adv_step_size", validation.check_non_negative("adv_step_size", self.adv_step_size))
        put("init_noise", validation.check_non_negative("init_noise", self.init_noise))
        put("bounds", validation.check_bounds(self.bounds))
        for name in ("mean", "std"):
            put(name, _channel_values(name, getattr(self, name)))
        batch_size = self.batch_size
        if batch_size is not None and (isinstance(batch_size, bool) or not isinstance(batch_size, numbers.Integral)
                                       or batch_size < 1):
            raise ValueError(f"batch_size must be a positive int or None (automatic), got {batch_size!r}")
        put("batch_size", None if batch_size is None else int(batch_size))
        for name in ("compile_model", "graph"):
            if not isinstance(getattr(self, name), bool):
                raise TypeError(f"{name} must be True or False, got {getattr(self, name)!r}")
        check_precision(self.precision, self.compile_model)
        put("record_every", validation.check_count("record_every", self.record_every))
        put("record_device", None if self.record_device is None else torch.device(self.record_device))
        put("progress", bool(self.progress))
        if self.backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, got {self.backend!r}")

    def replace(self, **changes: Any) -> "LSTSettings":
        """A copy with some fields changed (validated); unknown names raise TypeError."""
        return dataclasses.replace(self, **changes)

    @classmethod
    def from_keywords(cls, base: Optional["LSTSettings"] = None, **keywords: Any) -> "LSTSettings":
        """`base` (default: the defaults) with `keywords` applied; names an unknown keyword."""
        unknown = sorted(set(keywords) - FIELDS)
        if unknown:
            raise TypeError(f"unknown LST setting(s) {unknown}; the settings are {sorted(FIELDS)}")
        base = cls() if base is None else base
        if not isinstance(base, LSTSettings):
            raise TypeError(f"settings must be an LSTSettings, got {type(base).__name__}")
        return base.replace(**keywords) if keywords else base

    def config(self) -> Dict[str, Any]:
        """The settings as plain JSON-able values (record_device and progress do not change results and
        are left out)."""
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)
               if f.name not in ("record_device", "progress")}
        for name in ("bounds", "mean", "std"):
            out[name] = None if out[name] is None else list(out[name])
        return out


FIELDS = frozenset(f.name for f in dataclasses.fields(LSTSettings))


def _channel_values(name: str, value: Union[None, float, Tuple[float, ...], torch.Tensor]) -> Optional[Tuple[float, ...]]:
    if value is None:
        return None
    if isinstance(value, (str, bytes)):
        raise TypeError(f"{name} must be a number or a sequence of per-channel numbers, got the string {value!r}")
    try:
        values = tuple(float(v) for v in torch.as_tensor(value, dtype=torch.float64).flatten().tolist())
    except (TypeError, ValueError, RuntimeError):
        raise ValueError(f"{name} must be a number or a sequence of per-channel numbers, got {value!r}") from None
    if not values or not all(math.isfinite(v) for v in values):
        raise ValueError(f"{name} must be finite, got {list(values)}")
    if name == "std" and any(v <= 0 for v in values):
        raise ValueError(f"std must be > 0, got {list(values)}")
    return values


# The evaluation and the demo walk with a larger step than the paper's ImageNet runs, so that 28x28 walks get
# close to their targets (README, "The shipped Fashion-MNIST default"); otherwise the paper's settings.
EVALUATION_SETTINGS = LSTSettings(step_size=5e-2)
DEMO_SETTINGS = EVALUATION_SETTINGS

# The LST settings an evaluation records in its config.json (the others do not change its tables).
EVAL_LST_FIELDS = ("iterations", "step_size", "threshold", "adv_step_size", "init_noise", "precision")


@dataclass(frozen=True)
class EvalConfig:
    """What an evaluation computes; two runs with equal configs produce equal tables.

    Build it with keywords: the evaluation's own fields, and either `lst=LSTSettings(...)` or the recorded
    LST fields by name (`EvalConfig(iterations=40, step_size=0.1)`), applied to EVALUATION_SETTINGS.
    """

    model: str = field(default="cnn", metadata=_help(
        "cnn, cnn-robust, vit (shipped), timm:NAME, torchvision:NAME, or an architecture "
        "(fashion_cnn, fashion_vit, wrn28_10, timm:NAME, ...) with --checkpoint"))
    checkpoint: Optional[str] = field(default=None, metadata=_help(
        "weights file: safetensors or a weights-only torch file"))
    pretrained: bool = field(default=True, metadata=_help(
        "timm/torchvision: pretrained weights", negated="timm/torchvision: random initialization"))
    data: str = field(default="fashion-mnist", metadata=_help(
        "fashion-mnist, fashion-mnist-sample, cifar10:DIR, imagefolder:DIR or tensor:FILE"))
    rounds: int = field(default=5, metadata=_help("rounds of targets per source"))
    num_samples: int = field(default=100, metadata=_help("sources in the pool"))
    min_confidence: Optional[float] = field(default=None, metadata=_help(
        "pool: also ask confidence above this (the paper: 0.6)"))
    triangle_n: int = field(default=10, metadata=_help("triangle grid: n + 1 points per edge"))
    chunk_size: int = field(default=256, metadata=_help("images per result file (the unit of resume)"))
    seed: int = field(default=0, metadata=_help("seeds the pool, the pairing and every chunk's noise"))
    lst: LSTSettings = field(default=EVALUATION_SETTINGS, metadata=_help("the traversal's settings"))

    def __init__(self, lst: Optional[LSTSettings] = None, **keywords: Any) -> None:
        own = {k: keywords.pop(k) for k in list(keywords) if k in _EVAL_OWN_FIELDS}
        for f in dataclasses.fields(self):
            if f.name != "lst":
                object.__setattr__(self, f.name, own.get(f.name, f.default))
        object.__setattr__(self, "lst", LSTSettings.from_keywords(lst or EVALUATION_SETTINGS, **keywords))
        self.validate()

    def validate(self) -> None:
        for name in ("rounds", "num_samples", "chunk_size", "triangle_n"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
                raise ValueError(f"{name} must be >= 1, got {value}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, numbers.Integral):
            raise ValueError(f"seed must be an integer, got {self.seed!r}")
        mc = self.min_confidence
        if mc is not None and (isinstance(mc, bool) or not isinstance(mc, numbers.Real) or not 0 <= mc < 1):
            # NaN fails 0 <= mc: a NaN would pass no image and never equal itself in config.json
            raise ValueError(f"min_confidence must be None or a number in [0, 1), got {mc!r}")
        for name in ("model", "data"):
            if not isinstance(getattr(self, name), str) or not getattr(self, name):
                raise ValueError(f"{name} must be a non-empty string, got {getattr(self, name)!r}")
        if self.checkpoint is not None and not isinstance(self.checkpoint, str):
            raise ValueError(f"checkpoint must be None or a path, got {self.checkpoint!r}")
        if not isinstance(self.pretrained, bool):
            raise ValueError(f"pretrained must be True or False, got {self.pretrained!r}")
        if not isinstance(self.lst, LSTSettings):
            raise TypeError(f"lst must be an LSTSettings, got {type(self.lst).__name__}")

    def replace(self, **changes: Any) -> "EvalConfig":
        return EvalConfig(**{**self.to_dict(), "lst": self.lst, **changes})

    def to_dict(self) -> Dict[str, Any]:
        """The flat form written to config.json (the same keys as folders written before `lst` existed)."""
        out = {name: getattr(self, name) for name in _EVAL_OWN_FIELDS}
        out.update({name: getattr(self.lst, name) for name in EVAL_LST_FIELDS})
        return out

    @classmethod
    def from_dict(cls, values: Dict[str, Any]) -> "EvalConfig":
        """Read the flat form; keys missing from an older folder take their defaults."""
        unknown = sorted(set(values) - set(_EVAL_OWN_FIELDS) - set(EVAL_LST_FIELDS))
        if unknown:
            raise ValueError(f"unknown evaluation settings {unknown}")
        return cls(**values)


_EVAL_OWN_FIELDS = tuple(f.name for f in dataclasses.fields(EvalConfig) if f.name != "lst")
