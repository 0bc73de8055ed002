"""What an evaluation computes (`EvalConfig`): its own settings plus the traversal's (`lst`), and the flat
form written to OUT/config.json."""

from __future__ import annotations

import dataclasses
import numbers
from dataclasses import dataclass, field
from typing import Any, Dict, Optional

from lst_fast.checks import check_count
from lst_fast.data.sources import DATA_SPECS
from lst_fast.errors import InputError, InputTypeError
from lst_fast.evaluation.limits import BATCH_LIMIT, NUM_SAMPLES_LIMIT, ROUNDS_LIMIT, SEED_LIMIT, TRIANGLE_N_LIMIT
from lst_fast.models import MODEL_SPECS
from lst_fast.walk.settings import EVALUATION_SETTINGS, LSTSettings, field_help

__all__ = ["RECORDED_LST_FIELDS", "EvalConfig"]


# The LST settings an evaluation records in its config.json (the others do not change its tables).
RECORDED_LST_FIELDS = ("iterations", "step_size", "threshold", "adv_step_size", "init_noise", "precision")


@dataclass(frozen=True)
class EvalConfig:
    """What an evaluation computes; two runs with equal configs produce equal tables.

    Build it with keywords: the evaluation's own fields, and either `lst=LSTSettings(...)` or the recorded
    LST fields by name (`EvalConfig(iterations=40, step_size=0.1)`), applied to EVALUATION_SETTINGS.
    """

    model: str = field(
        default="cnn",
        metadata=field_help(MODEL_SPECS),
    )
    checkpoint: Optional[str] = field(
        default=None, metadata=field_help("weights file: safetensors or a weights-only torch file")
    )
    pretrained: bool = field(
        default=True,
        metadata=field_help("timm/torchvision: pretrained weights", negated="timm/torchvision: random initialization"),
    )
    data: str = field(
        default="fashion-mnist",
        metadata=field_help(DATA_SPECS),
    )
    rounds: int = field(default=5, metadata=field_help("rounds of targets per source"))
    num_samples: int = field(default=100, metadata=field_help("sources in the pool"))
    min_confidence: Optional[float] = field(
        default=None, metadata=field_help("pool: also ask confidence above this (the paper: 0.6)")
    )
    triangle_n: int = field(
        default=10,
        metadata=field_help("Table 2's triangle grid: n + 1 points per edge, (n + 1)(n + 2) / 2 in all (paper: 10)"),
    )
    chunk_size: int = field(default=256, metadata=field_help("images per result file (the unit of resume)"))
    seed: int = field(default=0, metadata=field_help("seeds the pool, the targets and every chunk's noise"))
    pool: Optional[str] = field(
        default=None, metadata=field_help("the digest of the shared pool the sources come from (None: its own pool)")
    )
    lst: LSTSettings = field(default=EVALUATION_SETTINGS, metadata=field_help("the traversal's settings"))

    def __init__(self, lst: Optional[LSTSettings] = None, **keywords: Any) -> None:
        own = {k: keywords.pop(k) for k in list(keywords) if k in _EVAL_OWN_FIELDS}
        for f in dataclasses.fields(self):
            if f.name != "lst":
                object.__setattr__(self, f.name, own.get(f.name, f.default))
        object.__setattr__(self, "lst", LSTSettings.from_keywords(lst or EVALUATION_SETTINGS, **keywords))
        self.validate()

    def validate(self) -> None:
        # lst_fast.evaluation.limits: what each sizes could not be computed above its limit
        limits = {
            "rounds": ROUNDS_LIMIT,
            "num_samples": NUM_SAMPLES_LIMIT,
            "chunk_size": BATCH_LIMIT,
            "triangle_n": TRIANGLE_N_LIMIT,
        }
        for name, limit in limits.items():
            check_count(name, getattr(self, name), 1, limit)
        # every chunk's seed is seed * 1_000_003 + ...: it must fit torch's 64-bit seeds
        check_count("seed", self.seed, 0, SEED_LIMIT - 1)
        mc = self.min_confidence
        if mc is not None and (isinstance(mc, bool) or not isinstance(mc, numbers.Real) or not 0 <= mc < 1):
            # NaN fails 0 <= mc: a NaN would pass no image and never equal itself in config.json
            raise InputError(f"min_confidence must be None or a number in [0, 1), got {mc!r}")
        for name in ("model", "data"):
            if not isinstance(getattr(self, name), str) or not getattr(self, name):
                raise InputError(f"{name} must be a non-empty string, got {getattr(self, name)!r}")
        if self.checkpoint is not None and not isinstance(self.checkpoint, str):
            raise InputError(f"checkpoint must be None or a path, got {self.checkpoint!r}")
        if not isinstance(self.pretrained, bool):
            raise InputError(f"pretrained must be True or False, got {self.pretrained!r}")
        if self.pool is not None and (not isinstance(self.pool, str) or not self.pool):
            raise InputError(f"pool must be None or a pool's digest, got {self.pool!r}")
        if not isinstance(self.lst, LSTSettings):
            raise InputTypeError(f"lst must be an LSTSettings, got {type(self.lst).__name__}")

    def replace(self, **changes: Any) -> "EvalConfig":
        return EvalConfig(**{**self.to_dict(), "lst": self.lst, **changes})

    def to_dict(self) -> Dict[str, Any]:
        """The flat form written to config.json: the evaluation's own fields and RECORDED_LST_FIELDS ("pool"
        only for a run on a shared pool, so a run on its own pool writes what it always wrote)."""
        out = {name: getattr(self, name) for name in _EVAL_OWN_FIELDS if name != "pool" or self.pool is not None}
        out.update({name: getattr(self.lst, name) for name in RECORDED_LST_FIELDS})
        return out

    @classmethod
    def from_dict(cls, values: Dict[str, Any]) -> "EvalConfig":
        """Read the flat form (every key of `to_dict`, no other; "pool" only for a run on a shared pool)."""
        keys = set(_EVAL_OWN_FIELDS) | set(RECORDED_LST_FIELDS)
        unknown, missing = sorted(set(values) - keys), sorted(keys - set(values) - {"pool"})
        if unknown:
            raise InputError(f"unknown evaluation settings {unknown}")
        if missing:
            raise InputError(f"missing evaluation settings {missing}")
        return cls(**values)


_EVAL_OWN_FIELDS = tuple(f.name for f in dataclasses.fields(EvalConfig) if f.name != "lst")
