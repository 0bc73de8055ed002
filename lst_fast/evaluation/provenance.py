"""What made an evaluation's results, by content rather than by path: OUT/provenance.json.

    format, version        "lst-fast provenance", 1
    model                  the model spec (for the messages)
    weights.sha256         SHA-256 of the weights the evaluation ran
    weights.of             "checkpoint file": of the checkpoint file's bytes (--checkpoint); "state_dict":
                           of the model's state_dict (every tensor's name, dtype, shape and bytes, in name
                           order, the mean/std in front included), which covers the shipped models, timm:,
                           torchvision:, robustbench: and py: models
    pixels.sha256          SHA-256 of the pool's images as decoded (float32, in `indices` order): the
                           images the sources and targets are drawn from
    pixels.indices         the data set indices it covers: a run's own pool (its sources), or the shared
                           pool's images (then it is the pool's own pixel digest, checked against the data)
    pixels.preprocessing   the preprocessing they were decoded in

`lst-fast eval` writes it (with config.json, before any result file) and checks it when it resumes; compare,
the leaderboard and the site read it (pairing on content) and the site checks it against the model and the
data it opens. A folder written before lst_fast recorded it (config.json and result files, no
provenance.json) still reads: its results are used unchecked, and compare and the site do not call it
paired with another run (its files cannot show the same data).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple, Union

import torch
from torch import Tensor, nn

from lst_fast.atomic_files import atomic_write_text, standard_json
from lst_fast.errors import DataError, InputError

__all__ = [
    "PROVENANCE_NAME",
    "Provenance",
    "changes",
    "file_sha256",
    "read_provenance",
    "refuse_changes",
    "short",
    "state_dict_sha256",
    "weights_digest",
    "write_provenance",
]

PROVENANCE_NAME = "provenance.json"
FORMAT, VERSION = "lst-fast provenance", 1
WEIGHTS_OF = ("checkpoint file", "state_dict")


def file_sha256(path: Union[str, os.PathLike]) -> str:
    """SHA-256 of a file's bytes (read in 1 MiB blocks)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def state_dict_sha256(module: nn.Module) -> str:
    """SHA-256 of a module's state_dict: for each tensor in name order, its name, dtype, shape and bytes
    (on the CPU, contiguous: the same on every device)."""
    digest = hashlib.sha256()
    state = module.state_dict()
    for name in sorted(state):
        tensor = state[name]
        if not isinstance(tensor, Tensor):  # extra state a module may keep
            digest.update(json.dumps([name, repr(tensor)]).encode())
            continue
        t = tensor.detach().cpu().contiguous()
        digest.update(json.dumps([name, str(t.dtype), list(t.shape)]).encode())
        digest.update(t.reshape(-1).view(torch.uint8).numpy().data)  # hashed in place, no copy
    return digest.hexdigest()


def weights_digest(classifier: nn.Module, checkpoint: Optional[Union[str, os.PathLike]] = None) -> Dict[str, str]:
    """{"sha256", "of"}: the checkpoint file's bytes when there is one, else the classifier's state_dict
    (ModelDescriptor.classifier(): the mean/std in front included)."""
    if checkpoint is not None:
        try:
            return {"sha256": file_sha256(checkpoint), "of": "checkpoint file"}
        except OSError as error:
            raise InputError(f"cannot read the checkpoint {checkpoint}: {error.strerror or error}") from error
    return {"sha256": state_dict_sha256(classifier), "of": "state_dict"}


def short(digest: Optional[str]) -> str:
    return "none" if digest is None else digest[:12] + "…"


@dataclasses.dataclass(frozen=True)
class Provenance:
    """The content that made an evaluation's results (see the module's docstring)."""

    model: str
    weights_sha256: str
    weights_of: str
    pixels_sha256: str
    pixel_indices: Tuple[int, ...]
    preprocessing: Dict[str, Any]

    def to_dict(self) -> Dict[str, Any]:
        return {
            "format": FORMAT,
            "version": VERSION,
            "model": self.model,
            "weights": {"sha256": self.weights_sha256, "of": self.weights_of},
            "pixels": {
                "sha256": self.pixels_sha256,
                "indices": list(self.pixel_indices),
                "preprocessing": self.preprocessing,
            },
        }

    def digests(self) -> Dict[str, str]:
        """The digests alone (what a comparison or a leaderboard row records of it)."""
        return {
            "weights_sha256": self.weights_sha256,
            "weights_of": self.weights_of,
            "pixels_sha256": self.pixels_sha256,
        }

    @classmethod
    def from_dict(cls, values: Any, name: str) -> "Provenance":
        """Read the form of to_dict; DataError naming `name` and the field when it is not that."""

        def fail(field: str, expected: str) -> DataError:
            return DataError(f"{name} is a malformed provenance file ({field} must be {expected})")

        if not isinstance(values, dict) or values.get("format") != FORMAT:
            raise fail("format", repr(FORMAT))
        if values.get("version") != VERSION:
            raise fail("version", str(VERSION))
        weights, pixels = values.get("weights"), values.get("pixels")
        if not isinstance(values.get("model"), str):
            raise fail("model", "a model spec")
        if not isinstance(weights, dict) or not _is_sha256(weights.get("sha256")):
            raise fail("weights.sha256", "a SHA-256 in hex")
        if weights.get("of") not in WEIGHTS_OF:
            raise fail("weights.of", f"one of {list(WEIGHTS_OF)}")
        if not isinstance(pixels, dict) or not _is_sha256(pixels.get("sha256")):
            raise fail("pixels.sha256", "a SHA-256 in hex")
        indices = pixels.get("indices")
        if not isinstance(indices, list) or not all(type(i) is int and i >= 0 for i in indices):
            raise fail("pixels.indices", "a list of data set indices")
        if not isinstance(pixels.get("preprocessing"), dict):
            raise fail("pixels.preprocessing", "a JSON object")
        return cls(
            values["model"],
            weights["sha256"],
            weights["of"],
            pixels["sha256"],
            tuple(indices),
            dict(pixels["preprocessing"]),
        )


def _is_sha256(value: Any) -> bool:
    return isinstance(value, str) and len(value) == 64 and set(value) <= set("0123456789abcdef")


def read_provenance(folder: Union[str, os.PathLike]) -> Optional[Provenance]:
    """The folder's provenance, or None when it has none (written before lst_fast recorded it)."""
    path = Path(folder) / PROVENANCE_NAME
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as error:
        raise DataError(f"cannot read {path}: {error}") from error
    try:
        values = json.loads(text)
    except json.JSONDecodeError as error:
        raise DataError(f"{path} is not valid JSON ({error})") from error
    return Provenance.from_dict(values, str(path))


def write_provenance(folder: Union[str, os.PathLike], provenance: Provenance, advice: str = "") -> Path:
    return atomic_write_text(Path(folder) / PROVENANCE_NAME, standard_json(provenance.to_dict(), indent=1), advice)


def changes(recorded: Provenance, ours: Provenance, where: str) -> List[str]:
    """What differs between the recorded provenance of `where` and ours, one phrase each (empty: none)."""
    found = []
    if recorded.weights_sha256 != ours.weights_sha256 or recorded.weights_of != ours.weights_of:
        found.append(
            f"weights of {ours.model} changed since {where} was written: {recorded.weights_of} sha256 "
            f"{short(recorded.weights_sha256)} now {ours.weights_of} sha256 {short(ours.weights_sha256)}"
        )
    if recorded.pixel_indices != ours.pixel_indices:  # a model's own pool is chosen by the model
        found.append(
            f"the pool of images it walks changed since {where} was written ({len(ours.pixel_indices)} images, "
            f"were {len(recorded.pixel_indices)}; other indices)"
        )
    elif recorded.preprocessing != ours.preprocessing:
        found.append(
            f"the preprocessing of the images changed since {where} was written: {recorded.preprocessing} now "
            f"{ours.preprocessing}"
        )
    elif recorded.pixels_sha256 != ours.pixels_sha256:
        found.append(
            f"the data's pixels changed since {where} was written: sha256 {short(recorded.pixels_sha256)} now "
            f"{short(ours.pixels_sha256)}"
        )
    return found


def refuse_changes(recorded: Optional[Provenance], ours: Provenance, where: str, advice: str) -> None:
    """InputError (one line: what changed, then `advice`) unless `recorded` is None or equals ours."""
    if recorded is None:
        return
    found = changes(recorded, ours, where)
    if found:
        raise InputError("; ".join(found) + f"; {advice}")
