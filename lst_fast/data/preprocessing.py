"""How a model wants its images: channels and size, and the resize and crop that get them there.

Only the geometric part lives here. LST walks in [0, 1] image space, so a model's mean/std is not part
of the preprocessing: it is applied inside the model call (see lst_fast.models.ModelDescriptor).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Mapping, Tuple

from lst_fast.checks import check_count
from lst_fast.errors import InputError

INTERPOLATIONS = ("nearest", "bilinear", "bicubic", "lanczos")
CROP_MODES = ("center", "squash", "border")  # timm's evaluation crop modes


@dataclasses.dataclass(frozen=True)
class Preprocessing:
    """Resize the shorter side to size / crop_pct, then crop the center to `input_size` (timm's evaluation
    transform). crop_mode "squash" resizes both sides to the size instead (no crop)."""

    input_size: Tuple[int, int, int]  # (C, H, W)
    interpolation: str = "bilinear"
    crop_pct: float = 1.0
    crop_mode: str = "center"

    def __post_init__(self) -> None:
        size = tuple(self.input_size)
        if len(size) != 3 or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in size):
            raise InputError(f"input_size must be three positive integers (C, H, W), got {self.input_size!r}")
        if size[0] not in (1, 3):
            raise InputError(f"input_size must have 1 (grey) or 3 (RGB) channels, got {size[0]}")
        object.__setattr__(self, "input_size", size)
        if self.interpolation not in INTERPOLATIONS:
            raise InputError(f"interpolation must be one of {INTERPOLATIONS}, got {self.interpolation!r}")
        if not 0 < self.crop_pct <= 1:
            raise InputError(f"crop_pct must be in (0, 1], got {self.crop_pct!r}")
        if self.crop_mode not in CROP_MODES:
            raise InputError(f"crop_mode must be one of {CROP_MODES}, got {self.crop_mode!r}")

    def with_size(self, size: int) -> "Preprocessing":
        """The same resize and crop to a size x size input."""
        check_count("the input size", size, 1)
        return dataclasses.replace(self, input_size=(self.input_size[0], size, size))

    def to_dict(self) -> dict:
        return {**dataclasses.asdict(self), "input_size": list(self.input_size)}


# The usual ImageNet evaluation: resize to 256, center crop 224 (the paper's, and torchvision's).
IMAGENET_EVAL = Preprocessing((3, 224, 224), "bilinear", 0.875, "center")


def from_timm_config(config: Mapping[str, Any]) -> Preprocessing:
    """The preprocessing of a timm data config (timm.data.resolve_data_config)."""
    c, h, w = (int(v) for v in config["input_size"])
    return Preprocessing(
        (c, h, w),
        config.get("interpolation") or "bilinear",
        float(config.get("crop_pct") or 1.0),
        config.get("crop_mode") or "center",
    )


def image_transform(pre: Preprocessing) -> Callable:
    """A PIL image -> float32 (C, H, W) in [0, 1], resized and cropped as `pre` says (timm's evaluation
    transform without its normalization). The caller converts the image to grey or RGB first."""
    import torch
    from timm.data import create_transform

    try:
        transform = create_transform(
            input_size=pre.input_size,
            interpolation=pre.interpolation,
            crop_pct=pre.crop_pct,
            crop_mode=pre.crop_mode,
            normalize=False,
        )
    except TypeError:  # timm before `normalize=`: drop the Normalize step ourselves
        from torchvision import transforms

        full = create_transform(
            input_size=pre.input_size, interpolation=pre.interpolation, crop_pct=pre.crop_pct, crop_mode=pre.crop_mode
        )
        transform = transforms.Compose([t for t in full.transforms if type(t).__name__ != "Normalize"])

    def to_tensor(image) -> "torch.Tensor":
        tensor = transform(image)  # uint8 from timm's normalize=False transform, float otherwise
        return tensor.to(torch.float32) / 255.0 if tensor.dtype == torch.uint8 else tensor.to(torch.float32)

    return to_tensor
