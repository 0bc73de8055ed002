"""One description of a model: what `resolve_model` returns and what every command reads."""

from __future__ import annotations

import dataclasses
import itertools
from typing import Optional, Tuple

import torch
from torch import nn

from lst_fast.data.preprocessing import Preprocessing
from lst_fast.errors import InputError, InputTypeError
from lst_fast.walk.validation import channel_values, check_channel_count


@dataclasses.dataclass(frozen=True)
class ModelDescriptor:
    """A model and what is known about its inputs and outputs.

    module: takes images in [0, 1] (`preprocessing.input_size`), in eval mode. It either normalizes
        inside (then mean and std are None) or expects `(x - mean) / std` applied in front of it, which
        `lst_fast.traverse(..., mean=, std=)` and `classifier()` do.
    mean, std: per-channel normalization to apply in front of `module`, or None.
    preprocessing: the resize and crop that turn an image file into the module's input.
    class_names: one name per output class where known (None otherwise).
    spec: the name it was resolved from.
    """

    spec: str
    module: nn.Module
    preprocessing: Preprocessing
    mean: Optional[Tuple[float, ...]] = None
    std: Optional[Tuple[float, ...]] = None
    class_names: Optional[Tuple[str, ...]] = None

    def __post_init__(self) -> None:
        if not isinstance(self.module, nn.Module):
            raise InputTypeError(f"module must be a torch.nn.Module, got {type(self.module).__name__}")
        if (self.mean is None) != (self.std is None):
            raise InputError(f"{self.spec}: give both mean and std, or neither (got mean={self.mean}, std={self.std})")
        for name in ("mean", "std"):
            try:
                values = channel_values(name, getattr(self, name))
                if values is not None:
                    check_channel_count(name, values, self.preprocessing.input_size[0])
            except ValueError as error:
                raise InputError(f"{self.spec}: {error}") from None
            object.__setattr__(self, name, values)
        if self.class_names is not None:
            object.__setattr__(self, "class_names", tuple(str(n) for n in self.class_names))

    @property
    def input_size(self) -> Tuple[int, int, int]:
        """(C, H, W) of the module's input."""
        return self.preprocessing.input_size

    def classifier(self) -> nn.Module:
        """One module from [0, 1] images to logits: `module` with the mean/std (if any) in front."""
        if self.mean is None:
            return self.module
        from lst_fast.models.fashion import Normalize

        tensors = itertools.chain(self.module.parameters(), self.module.buffers())
        device = next((t.device for t in tensors), torch.device("cpu"))
        return nn.Sequential(Normalize(self.mean, self.std), self.module).to(device).eval()

    def class_name(self, k: int) -> str:
        """The name of class k, or 'class k' where the names are not known."""
        if self.class_names is not None and 0 <= k < len(self.class_names):
            return self.class_names[k]
        return f"class {k}"

    def replace(self, **changes) -> "ModelDescriptor":
        return dataclasses.replace(self, **changes)
