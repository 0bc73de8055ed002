"""Argument checks for the public API: each failure names the argument and what was expected."""

from __future__ import annotations

import math
import numbers
from typing import Callable, Optional, Sequence, Tuple, Union

import torch
from torch import Tensor

from lst_fast.caller_warning import warn_at_caller
from lst_fast.errors import InputError, InputTypeError

Bounds = Tuple[float, float]


def _describe(t: Tensor) -> str:
    return f"shape {tuple(t.shape)}, dtype {t.dtype}, device {t.device}"


def _check_has_data(name: str, t: Tensor, what: str) -> None:
    """Meta tensors have shapes but no values: say so before torch fails to read them."""
    if t.device.type == "meta":
        raise InputError(
            f"{name} is on the meta device (a tensor without values); pass {what} that hold data, "
            f"e.g. on the CPU or a GPU, got {_describe(t)}"
        )


def check_positive(name: str, value: float) -> float:
    if not isinstance(value, numbers.Real) or isinstance(value, bool) or not math.isfinite(value) or value <= 0:
        raise InputError(f"{name} must be a finite number > 0, got {value!r}")
    return float(value)


def check_non_negative(name: str, value: float) -> float:
    if not isinstance(value, numbers.Real) or isinstance(value, bool) or not math.isfinite(value) or value < 0:
        raise InputError(f"{name} must be a finite number >= 0, got {value!r}")
    return float(value)


def check_bounds(bounds: Sequence[float]) -> Bounds:
    if isinstance(bounds, (str, bytes)):
        raise InputTypeError(f"bounds must be a pair (lo, hi) of numbers, got the string {bounds!r}")
    try:
        lo, hi = (float(b) for b in bounds)
    except (TypeError, ValueError):
        raise InputError(f"bounds must be a pair (lo, hi) of numbers, got {bounds!r}") from None
    if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
        raise InputError(f"bounds must be finite with lo < hi, got {bounds!r}")
    return lo, hi


def check_model(model: torch.nn.Module) -> None:
    if not isinstance(model, torch.nn.Module):
        raise InputTypeError(f"model must be a torch.nn.Module returning logits, got {type(model).__name__}")
    try:
        hash(model)
    except TypeError:
        raise InputTypeError(
            f"model ({type(model).__name__}) is unhashable (it defines __eq__ without __hash__); "
            "torch.nn.Module's own methods (.eval(), .modules()) need a hashable module: add "
            "__hash__ = nn.Module.__hash__ to the class"
        ) from None
    for t in list(model.parameters()) + list(model.buffers()):
        if t.device.type == "meta":
            raise InputError(
                f"model ({type(model).__name__}) has weights on the meta device (never materialized); "
                "load its weights, e.g. model.to_empty(device=...) and load_state_dict(...)"
            )


def check_images(x: Tensor, y: Tensor, bounds: Bounds) -> None:
    """x: source images (N, C, H, W); y: target images of x's shape, or one (C, H, W) image."""
    if not isinstance(x, Tensor):
        raise InputTypeError(f"x must be a tensor of source images (N, C, H, W), got {type(x).__name__}")
    _check_has_data("x", x, "source images")
    if not x.is_floating_point():
        raise InputTypeError(f"x must be floating-point source images (N, C, H, W) in {bounds}, got {_describe(x)}")
    if x.dim() != 4:
        raise InputError(f"x must be source images of shape (N, C, H, W), got {_describe(x)}")
    if not isinstance(y, Tensor):
        raise InputTypeError(f"y must be a tensor of target images, got {type(y).__name__}")
    _check_has_data("y", y, "target images")
    if not y.is_floating_point() or y.dim() == 1:
        raise InputTypeError(
            f"y is the target images (N, C, H, W) or one image (C, H, W), got {_describe(y)}; "
            "it looks like class labels: pass those as label=..."
        )
    if tuple(y.shape) not in (tuple(x.shape), tuple(x.shape[1:])):
        raise InputError(
            f"y must have x's shape {tuple(x.shape)} or one image's shape {tuple(x.shape[1:])}, got {_describe(y)}"
        )
    if y.device != x.device:
        raise InputError(f"y is on {y.device} but x is on {x.device}; put both on one device")
    lo, hi = bounds
    for name, t in (("x", x), ("y", y)):
        if t.numel() == 0:
            continue
        # one pass: min and max propagate NaN and show an Inf, 25x cheaper than isfinite(t).all() here
        t_min, t_max = (float(v) for v in torch.aminmax(t))
        if not (math.isfinite(t_min) and math.isfinite(t_max)):
            raise InputError(f"{name} contains NaN or Inf values")
        if t_min < lo or t_max > hi:
            raise InputError(
                f"{name} has values in [{t_min:g}, {t_max:g}], outside bounds [{lo:g}, {hi:g}]; "
                "pass images in the model's input range or set bounds=..."
            )


def check_device(device: Union[str, torch.device], name: str = "device") -> torch.device:
    """The torch.device that `device` names; ValueError naming `name` unless it is a device that holds
    data (cpu, cuda, cuda:N, ...): the meta device holds none, and a generator cannot even be made on it."""
    try:
        parsed = torch.device(device)
    except (RuntimeError, TypeError):
        raise InputError(f"{name} must be a device such as 'cpu', 'cuda' or 'cuda:1', got {device!r}") from None
    if parsed.type == "meta":
        raise InputError(f"{name} is the meta device, which holds no values (nor a generator); use 'cpu' or 'cuda'")
    return parsed


def check_generator(generator, device: torch.device) -> None:
    if generator is None:
        return
    if not isinstance(generator, torch.Generator):
        raise InputTypeError(f"generator must be a torch.Generator (or None), got {generator!r}")
    if generator.device.type != device.type:
        raise InputError(f"generator is on {generator.device} but x is on {device}")


def check_label(
    label: Optional[Tensor], n: int, num_classes: int, device: torch.device, name: str = "label"
) -> Optional[Tensor]:
    if label is None:
        return None
    if isinstance(label, numbers.Integral) and not isinstance(label, bool):
        label = torch.full((n,), int(label), dtype=torch.long, device=device)
    if not isinstance(label, Tensor):
        raise InputTypeError(f"{name} must be an integer tensor of shape ({n},), got {type(label).__name__}")
    _check_has_data(name, label, "class indices")
    if label.dtype.is_floating_point or label.dtype.is_complex or label.dtype == torch.bool:
        raise InputTypeError(f"{name} must be an integer tensor of class indices, got {_describe(label)}")
    if tuple(label.shape) != (n,):
        raise InputError(f"{name} must have shape ({n},), got {_describe(label)}")
    label = label.to(device=device, dtype=torch.long)
    if n and (int(label.min()) < 0 or int(label.max()) >= num_classes):
        raise InputError(
            f"{name} must hold class indices in [0, {num_classes}), got values in "
            f"[{int(label.min())}, {int(label.max())}]"
        )
    return label


def channel_values(name: str, value: Union[None, float, Sequence[float], Tensor]) -> Optional[Tuple[float, ...]]:
    """A per-channel mean or std as a tuple of floats (None stays None): the one parser of mean/std
    (LSTSettings, ModelDescriptor, normalization). Finite, at least one value, std > 0."""
    if value is None:
        return None
    if isinstance(value, (str, bytes)):
        raise InputTypeError(f"{name} must be a number or a sequence of per-channel numbers, got the string {value!r}")
    try:
        values = tuple(float(v) for v in torch.as_tensor(value, dtype=torch.float64).flatten().tolist())
    except (TypeError, ValueError, RuntimeError):
        raise InputError(f"{name} must be a number or a sequence of per-channel numbers, got {value!r}") from None
    if not values or not all(math.isfinite(v) for v in values):
        raise InputError(f"{name} must be finite, got {list(values)}")
    if name == "std" and any(v <= 0 for v in values):
        raise InputError(f"std must be > 0, got {list(values)}")
    return values


def check_channel_count(name: str, values: Tuple[float, ...], channels: int) -> None:
    """One value for every channel, or one for all."""
    if len(values) not in (1, channels):
        raise InputError(f"{name} must have 1 or {channels} (channels) values, got {len(values)}")


def check_model_output(model: torch.nn.Module, forward: Callable[[Tensor], Tensor], images: Tensor) -> Tensor:
    """The logits of `forward` (the model, as LST calls it) on a few of the images, checked before any walk:
    the model must leave its input as it was, and return finite floating-point logits (N, classes);
    outputs that look like probabilities warn (at the caller's line). A few images tell the
    class count, so the labels can be checked next."""
    probe = images[:8].clone()
    version = probe._version
    with torch.no_grad():
        logits = forward(probe)
    if probe._version != version:
        raise InputError(
            f"model ({type(model).__name__}) changes its input in place; LST hands it the "
            "iterate itself: make that operation out of place, or pass mean/std (the model then "
            "gets a normalized copy)"
        )
    check_logits(logits, probe.shape[0])
    warn_if_probabilities(logits)
    return logits


def check_logits(logits: Tensor, n: int) -> None:
    if not isinstance(logits, Tensor) or logits.dim() != 2 or logits.shape[0] != n:
        got = tuple(logits.shape) if isinstance(logits, Tensor) else type(logits).__name__
        raise InputError(f"model must return logits of shape ({n}, num_classes), got {got}")
    if not logits.is_floating_point():
        raise InputError(
            f"model must return floating-point logits (autograd differentiates only those), got {logits.dtype}"
        )
    if not bool(torch.isfinite(logits).all()):
        raise InputError("model returned NaN or Inf logits for the source images x")


def warn_if_probabilities(logits: Tensor) -> None:
    """Outputs that are already probabilities (every row >= 0, summing to 1) are taken as logits, whose
    softmax is then nearly flat: say so, at the first line outside lst_fast."""
    if (
        logits.numel()
        and bool((logits >= 0).all())
        and bool(
            torch.allclose(logits.double().sum(1), logits.new_ones(logits.shape[0], dtype=torch.float64), atol=1e-4)
        )
    ):
        warn_at_caller(
            "the model's outputs look like probabilities (every row is non-negative and sums to 1); "
            "LST expects logits and applies softmax itself: return the logits",
            UserWarning,
        )


def normalization(
    mean: Optional[Union[Sequence[float], Tensor]],
    std: Optional[Union[Sequence[float], Tensor]],
    channels: int,
    device: torch.device,
    dtype: torch.dtype,
) -> Optional[Tuple[Tensor, Tensor]]:
    """(mean, std) as (1, C, 1, 1) tensors, or None for no normalization."""
    if mean is None and std is None:
        return None
    values = []
    for name, value, default in (("mean", mean, 0.0), ("std", std, 1.0)):
        parsed = channel_values(name, value) or (default,)
        check_channel_count(name, parsed, channels)
        t = torch.tensor(parsed, dtype=torch.float64).expand(channels)
        values.append(t.reshape(1, channels, 1, 1).to(device=device, dtype=dtype))
    return values[0], values[1]
