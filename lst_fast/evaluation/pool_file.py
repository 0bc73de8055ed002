"""The checks of a pool file (pool.json) before any of it is used: its JSON (no duplicate keys, no NaN),
the type and range of every field, and its digest, which covers every field but itself.

Each problem is one DataError naming the file and the field: a pool file is trusted only whole.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any, Dict, List, Optional, Tuple

from lst_fast.checks import count_range, is_count
from lst_fast.data.preprocessing import Preprocessing
from lst_fast.errors import DataError, InputError
from lst_fast.evaluation.limits import (
    BATCH_LIMIT,
    NUM_SAMPLES_LIMIT,
    ROUNDS_LIMIT,
    SEED_LIMIT,
    SIDE_LIMIT,
    WORKERS_LIMIT,
)

__all__ = ["SIGNED_SCAN", "check_fields", "content_digest", "parse_json"]
_HEX64 = frozenset("0123456789abcdef")


def parse_json(text: str, name: str) -> Any:
    """The JSON value of `text`; DataError for invalid JSON, a repeated key or a NaN/Infinity token."""

    def pairs(items: List[Tuple[str, Any]]) -> Dict[str, Any]:
        keys = [k for k, _ in items]
        repeated = sorted({k for k in keys if keys.count(k) > 1})
        if repeated:
            raise DataError(f"{name} is a malformed pool file (key {repeated[0]!r} appears twice)")
        return dict(items)

    def constant(token: str) -> Any:
        raise DataError(f"{name} is a malformed pool file ({token} is not a JSON number)")

    try:
        return json.loads(text, object_pairs_hook=pairs, parse_constant=constant)
    except json.JSONDecodeError as error:
        raise DataError(f"{name} is not a pool file (not JSON: {error})") from error


# The fields of "scan" that the code reads (which images the scan looked at), signed by the digest. The
# others (decoded, forwards, seconds, workers, batch_size) and "confidence" record what building the pool
# cost and saw on that machine: they are checked for their type but never read, so they are not signed
# (the same pool built with other workers, or on another machine, has the same digest).
SIGNED_SCAN = ("size", "scanned", "qualifying", "filled")


def content_digest(values: Dict[str, Any]) -> str:
    """SHA-256 of every field of a pool file that the code reads: all but "digest", "confidence" and the
    scan's cost (canonical JSON: sorted keys, standard numbers)."""
    body = {k: v for k, v in values.items() if k not in ("digest", "confidence", "scan")}
    body["scan"] = {k: values["scan"][k] for k in SIGNED_SCAN}
    return hashlib.sha256(json.dumps(body, sort_keys=True, allow_nan=False).encode()).hexdigest()


def _is_sha256(value: Any) -> bool:
    return isinstance(value, str) and len(value) == 64 and set(value) <= _HEX64


class _Fields:
    """Collects the first problem of a pool file's fields, as 'FIELD: what was expected'."""

    def __init__(self, name: str):
        self.name = name

    def fail(self, field: str, expected: str, value: Any) -> None:
        shown = repr(value)
        shown = shown if len(shown) <= 60 else shown[:57] + "..."
        raise DataError(f"{self.name} is a malformed pool file ({field} must be {expected}, got {shown})")

    def keys(self, field: str, value: Any, keys: Tuple[str, ...]) -> Dict[str, Any]:
        if not isinstance(value, dict):
            self.fail(field, "a JSON object", value)
        missing, unknown = [k for k in keys if k not in value], sorted(set(value) - set(keys))
        if missing:
            self.fail(field, f"an object with {list(keys)}", f"no {missing[0]!r}")
        if unknown:
            self.fail(field, f"an object with {list(keys)}", f"also {unknown[0]!r}")
        return value

    def integer(self, field: str, value: Any, low: int, high: Optional[int] = None) -> int:
        if not is_count(value, low, high):
            self.fail(field, count_range(low, high), value)
        return value


INT64_MAX = 2**63 - 1  # indices and labels become int64 tensors
TOP_KEYS = ("format", "version", "data", "models", "settings", "indices", "labels", "confidence", "scan", "digest")
DATA_KEYS = ("spec", "kind", "size", "labels_sha256", "pixels_sha256")
MODEL_KEYS = ("model", "checkpoint", "pretrained", "preprocessing")
PREPROCESSING_KEYS = ("input_size", "interpolation", "crop_pct", "crop_mode")
SETTINGS_KEYS = ("num_samples", "min_confidence", "seed", "rounds")
SCAN_KEYS = ("size", "scanned", "decoded", "forwards", "qualifying", "seconds", "workers", "batch_size", "filled")


def _preprocessing(f: _Fields, field: str, value: Any) -> None:
    """A model's recorded preprocessing: the fields of lst_fast.data.preprocessing.Preprocessing, each in
    its range, and an input of at most SIDE_LIMIT pixels a side."""
    f.keys(field, value, PREPROCESSING_KEYS)
    size = value["input_size"]
    if not isinstance(size, list) or len(size) != 3 or not all(is_count(v, 1, SIDE_LIMIT) for v in size):
        f.fail(f"{field}.input_size", f"[C, H, W], integers in [1, {SIDE_LIMIT}]", size)
    try:
        Preprocessing(**{**value, "input_size": tuple(size)})
    except (InputError, TypeError) as error:
        f.fail(field, f"a model's preprocessing ({error})", value)


def check_fields(values: Dict[str, Any], name: str) -> None:
    """DataError (one line, naming the field) unless every field of a version-2 pool file has its type and
    range: indices distinct integers in the data set, one label per index, one confidence per index for
    each maker, a scan within the data set, and a digest that matches the rest."""
    f = _Fields(name)
    f.keys("the file", values, TOP_KEYS)
    data = f.keys("data", values["data"], DATA_KEYS)
    for key in ("spec", "kind"):
        if not isinstance(data[key], str) or not data[key]:
            f.fail(f"data.{key}", "a non-empty string", data[key])
    if data["kind"] != data["spec"].partition(":")[0]:
        f.fail("data.kind", f"the spec's kind {data['spec'].partition(':')[0]!r}", data["kind"])
    size = f.integer("data.size", data["size"], 1, INT64_MAX)
    for key in ("labels_sha256", "pixels_sha256"):
        if not _is_sha256(data[key]):
            f.fail(f"data.{key}", "a SHA-256 in hex", data[key])
    models = values["models"]
    if not isinstance(models, list) or not models:
        f.fail("models", "a non-empty list", models)
    for k, model in enumerate(models):
        f.keys(f"models[{k}]", model, MODEL_KEYS)
        if not isinstance(model["model"], str) or not model["model"]:
            f.fail(f"models[{k}].model", "a model spec", model["model"])
        if model["checkpoint"] is not None and not isinstance(model["checkpoint"], str):
            f.fail(f"models[{k}].checkpoint", "null or a path", model["checkpoint"])
        if not isinstance(model["pretrained"], bool):
            f.fail(f"models[{k}].pretrained", "true or false", model["pretrained"])
        _preprocessing(f, f"models[{k}].preprocessing", model["preprocessing"])
    makers = [m["model"] for m in models]
    if len(set(makers)) != len(makers):
        f.fail("models", "distinct models", makers)
    settings = f.keys("settings", values["settings"], SETTINGS_KEYS)
    num_samples = f.integer("settings.num_samples", settings["num_samples"], 1, NUM_SAMPLES_LIMIT)
    mc = settings["min_confidence"]
    if mc is not None and (not isinstance(mc, (int, float)) or isinstance(mc, bool) or not 0 <= mc < 1):
        f.fail("settings.min_confidence", "null or a number in [0, 1)", mc)
    f.integer("settings.seed", settings["seed"], 0, SEED_LIMIT - 1)
    f.integer("settings.rounds", settings["rounds"], 1, ROUNDS_LIMIT)
    indices, labels = values["indices"], values["labels"]
    if not isinstance(indices, list) or not all(is_count(i, 0, size - 1) for i in indices):
        f.fail("indices", f"a list of integers in [0, {size - 1}]", indices)
    if len(set(indices)) != len(indices):
        f.fail("indices", "distinct", sorted(i for i in set(indices) if indices.count(i) > 1)[:3])
    if not 2 <= len(indices) <= num_samples:
        f.fail("indices", f"2 to {num_samples} (settings.num_samples) images", len(indices))
    if (
        not isinstance(labels, list)
        or len(labels) != len(indices)
        or not all(is_count(v, 0, INT64_MAX) for v in labels)
    ):
        f.fail("labels", f"{len(indices)} integers in [0, {INT64_MAX}] (one per index)", labels)
    confidence = f.keys("confidence", values["confidence"], tuple(makers))
    for maker, row in confidence.items():
        ok = isinstance(row, list) and len(row) == len(indices)
        if not ok or not all(isinstance(p, (int, float)) and not isinstance(p, bool) and 0 <= p <= 1 for p in row):
            f.fail(f"confidence[{maker!r}]", f"{len(indices)} numbers in [0, 1]", row)
    scan = f.keys("scan", values["scan"], SCAN_KEYS)
    f.integer("scan.size", scan["size"], size, size)
    f.integer("scan.scanned", scan["scanned"], len(indices), size)
    if scan["qualifying"] != len(indices):
        f.fail("scan.qualifying", f"the number of indices ({len(indices)})", scan["qualifying"])
    if not isinstance(scan["filled"], bool) or scan["filled"] != (len(indices) == num_samples):
        f.fail("scan.filled", f"{len(indices) == num_samples} (whether the pool is full)", scan["filled"])
    # what building it cost: never read, but bounded like every count (one decode per image and data view)
    f.integer("scan.decoded", scan["decoded"], 0, size * len(models))
    f.integer("scan.workers", scan["workers"], 0, WORKERS_LIMIT)
    f.integer("scan.batch_size", scan["batch_size"], 0, BATCH_LIMIT)
    if not isinstance(scan["seconds"], (int, float)) or isinstance(scan["seconds"], bool) or scan["seconds"] < 0:
        f.fail("scan.seconds", "a number >= 0", scan["seconds"])
    forwards = f.keys("scan.forwards", scan["forwards"], tuple(makers))
    for maker, count in forwards.items():
        f.integer(f"scan.forwards[{maker!r}]", count, 0, size)
    if not isinstance(values["digest"], str) or values["digest"] != content_digest(values):
        raise DataError(f"{name} has been changed since it was written (its digest does not match its contents)")
