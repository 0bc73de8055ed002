"""The result of a traversal, and its storage as safetensors with a JSON header (no pickle)."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Dict, Optional, Sequence, Union

import torch
from torch import Tensor

from lst_fast.atomic_files import atomic_save_tensors
from lst_fast.errors import EnvironmentFault, InputError, InputTypeError, MissingFile

FORMAT_VERSION = 1
METADATA_KEY = "lst_fast"  # the safetensors metadata entry that holds lst_fast's JSON header


@dataclass
class TraversalResult:
    """Per-sample outcome of Level Set Traversal, in the order of the input batch.

    Attributes:
        images: final iterates (N, C, H, W), on the input's device and dtype.
        label: class whose confidence was held (N,).
        initial_confidence: p0, softmax confidence for `label` on the clean source (N,).
        confidence: confidence for `label` at the final iterate (N,).
        accepted_steps: how many of the iterations were accepted (N,).
        source_correct: whether the model predicts `label` on the clean source (N,).
        config: the traversal's settings and the versions that produced it.
        trace_iterations: iterations at which the traces were taken (R,), when record_every > 0.
        trace_confidence: source-class confidence of the iterate at those iterations (R, N).
        trace_target_confidence: confidence for the target image's class at those iterations (R, N).
        trace_images: the iterates at those iterations (R, N, C, H, W).
    """

    images: Tensor
    label: Tensor
    initial_confidence: Tensor
    confidence: Tensor
    accepted_steps: Tensor
    source_correct: Tensor
    config: Dict[str, Any] = field(default_factory=dict)
    trace_iterations: Optional[Tensor] = None
    trace_confidence: Optional[Tensor] = None
    trace_target_confidence: Optional[Tensor] = None
    trace_images: Optional[Tensor] = None

    def __len__(self) -> int:
        return self.images.shape[0]

    @classmethod
    def concatenate(
        cls, parts: Sequence["TraversalResult"], config: Optional[Dict[str, Any]] = None
    ) -> "TraversalResult":
        """The results of consecutive batches as one, in batch order (traces along their sample dimension;
        the trace iterations are the first part's)."""
        if not parts:
            raise InputError("concatenate needs at least one result")
        if len(parts) == 1:
            return dataclasses.replace(parts[0], config=dict(config if config is not None else parts[0].config))
        values: Dict[str, Any] = {}
        for f in fields(cls):
            first = getattr(parts[0], f.name)
            if f.name == "config":
                values[f.name] = dict(config if config is not None else first)
            elif first is None or f.name == "trace_iterations":
                values[f.name] = first
            else:
                values[f.name] = torch.cat([getattr(p, f.name) for p in parts], 1 if f.name.startswith("trace_") else 0)
        return cls(**values)

    @classmethod
    def empty(cls, images: Tensor, config: Optional[Dict[str, Any]] = None) -> "TraversalResult":
        """The result of traversing no images (`images` has a batch dimension of 0)."""
        device = images.device
        confidence = torch.empty(0, device=device)
        return cls(
            images=images.detach().clone(),
            label=torch.empty(0, dtype=torch.long, device=device),
            initial_confidence=confidence,
            confidence=confidence.clone(),
            accepted_steps=torch.empty(0, dtype=torch.long, device=device),
            source_correct=torch.empty(0, dtype=torch.bool, device=device),
            config=dict(config or {}),
        )

    def tensors(self) -> Dict[str, Tensor]:
        return {f.name: getattr(self, f.name) for f in fields(self) if isinstance(getattr(self, f.name), Tensor)}

    def save(self, path: Union[str, os.PathLike[str]]) -> Path:
        """Write the result to `path` (safetensors; config and versions as JSON in its header).

        The file is written to a temporary name and renamed, so a crash never leaves a partial file and a
        failed write (disk full: RuntimeError naming the file and the cause) leaves the file there before
        as it was. `config` must hold only JSON values (TypeError naming the first key that does not).

        Args:
            path: the file to write (its folder must exist).

        Returns:
            The path written, as a `Path`.
        """
        path = Path(path)
        if path.parent.exists() and not path.parent.is_dir():
            raise NotADirectoryError(f"cannot save a result to {path}: {path.parent} is a file, not a folder")
        _check_json("config", self.config, path)
        tensors = self.tensors()
        metadata = {
            METADATA_KEY: json.dumps({"format": FORMAT_VERSION, "config": self.config, "sha256": digest(tensors)})
        }
        return atomic_save_tensors(tensors, path, metadata, advice="a file already there is unchanged")

    @classmethod
    def load(cls, path: Union[str, os.PathLike[str]], device: Union[str, torch.device] = "cpu") -> "TraversalResult":
        """Read a result written by `save`.

        Args:
            path: a file written by `TraversalResult.save`.
            device: where to put the tensors.

        Returns:
            The `TraversalResult`, its tensors on `device`. A file that is not one, or whose tensors do not
            match the digest in its header, raises `ValueError` naming the file.
        """
        from safetensors import safe_open

        path = Path(path)
        try:
            device = torch.device(device)
        except (RuntimeError, TypeError) as error:
            raise InputError(f"device must be a torch device such as 'cpu' or 'cuda', got {device!r}") from error
        if device.type == "cuda" and not torch.cuda.is_available():
            raise EnvironmentFault(
                f"cannot load {path} onto {device}: no CUDA device is available here; load it with device='cpu'"
            )
        if not path.is_file():
            raise MissingFile(f"no traversal result at {path}")
        try:
            with safe_open(str(path), framework="pt", device="cpu") as f:
                header = json.loads((f.metadata() or {}).get(METADATA_KEY, "null"))
                tensors = {name: f.get_tensor(name) for name in f.keys()}
        except Exception as error:  # safetensors raises its own error types for corrupt files
            raise InputError(f"{path} is not a readable lst_fast result file: {error}") from error
        if not isinstance(header, dict) or header.get("format") != FORMAT_VERSION:
            raise InputError(f"{path} is not an lst_fast result (format {FORMAT_VERSION}) file")
        names = {f.name for f in fields(cls)}
        missing = {"images", "label", "initial_confidence", "confidence", "accepted_steps", "source_correct"} - set(
            tensors
        )
        if missing:
            raise InputError(f"{path} lacks the tensors {sorted(missing)}")
        expected = header.get("sha256")
        if expected is None:
            raise InputError(f"{path} has no SHA-256 digest in its header: not a file TraversalResult.save wrote")
        if expected != digest(tensors):
            raise InputError(f"{path} is corrupt: its tensors do not match the SHA-256 digest in its header")
        config = header.get("config", {})
        if not isinstance(config, dict):
            raise InputError(f"{path}: config must be a JSON object, got {type(config).__name__}")
        tensors = {k: v for k, v in tensors.items() if k in names}
        _check_consistent(tensors, path)
        return cls(config=config, **{k: v.to(device) for k, v in tensors.items()})


def _check_json(where: str, value: Any, path: Path) -> None:
    """TypeError naming the first entry of `value` (a config) that JSON cannot hold, as config['a'][0]."""
    if value is None or isinstance(value, (str, bool, int, float)):
        return
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise InputTypeError(
                    f"cannot save a result to {path}: {where} has the key {key!r} of type "
                    f"{type(key).__name__}; config keys must be strings (JSON)"
                )
            _check_json(f"{where}[{key!r}]", item, path)
        return
    if isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            _check_json(f"{where}[{i}]", item, path)
        return
    raise InputTypeError(
        f"cannot save a result to {path}: {where} is a {type(value).__name__} ({value!r:.60}), which "
        "JSON cannot hold; put numbers, strings, lists or dicts in the config"
    )


def digest(tensors: Dict[str, Tensor]) -> str:
    """SHA-256 over every tensor's name, dtype, shape and bytes, in name order."""
    h = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name].detach().to("cpu").contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        if t.numel():
            h.update(t.reshape(-1).view(torch.uint8).numpy().data)  # hashed in place, no copy
    return h.hexdigest()


def _check_consistent(tensors: Dict[str, Tensor], path: Path) -> None:
    """Shapes and dtypes as `save` writes them: N samples, R recorded iterations."""

    def fail(what: str) -> None:
        raise InputError(f"{path} is not a consistent lst_fast result: {what}")

    images = tensors["images"]
    if images.dim() != 4 or not images.is_floating_point():
        fail(f"images must be floating-point (N, C, H, W), got shape {tuple(images.shape)}, dtype {images.dtype}")
    n = images.shape[0]
    kinds = {
        "label": (torch.long,),
        "accepted_steps": (torch.long,),
        "source_correct": (torch.bool,),
        "initial_confidence": (torch.float32, torch.float64),
        "confidence": (torch.float32, torch.float64),
    }
    for name, dtypes in kinds.items():
        t = tensors[name]
        if tuple(t.shape) != (n,) or t.dtype not in dtypes:
            fail(f"{name} must have shape ({n},) and dtype {dtypes[0]}, got {tuple(t.shape)}, {t.dtype}")
    traces = [k for k in tensors if k.startswith("trace_")]
    if traces:
        if sorted(traces) != sorted(
            ("trace_iterations", "trace_confidence", "trace_target_confidence", "trace_images")
        ):
            fail(f"the traces are incomplete: {sorted(traces)}")
        r = tensors["trace_iterations"].shape[0] if tensors["trace_iterations"].dim() == 1 else -1
        if r < 0 or tensors["trace_iterations"].dtype != torch.long:
            fail("trace_iterations must be a 1-d int64 tensor")
        for name in ("trace_confidence", "trace_target_confidence"):
            if tuple(tensors[name].shape) != (r, n) or not tensors[name].is_floating_point():
                fail(f"{name} must have shape ({r}, {n}), got {tuple(tensors[name].shape)}")
        if (
            tuple(tensors["trace_images"].shape) != (r, *images.shape)
            or not tensors["trace_images"].is_floating_point()
        ):
            fail(f"trace_images must have shape {(r, *images.shape)}, got {tuple(tensors['trace_images'].shape)}")
