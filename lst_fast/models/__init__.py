"""Models by name. `resolve_model(spec)` returns a ModelDescriptor: the module (taking images in [0, 1]),
the mean/std to apply in front of it (None where it normalizes inside), its input size and preprocessing
(timm's data config for timm models), and its class names where known.

The shipped Fashion-MNIST models load offline, weights only, from safetensors:

    cnn         FashionCNN, normal training
    cnn-robust  the same CNN, PGD adversarial training (l_inf eps 0.1)
    vit         a small timm VisionTransformer (4x4 patches)

resolve_model also takes timm:NAME and torchvision:NAME (pretrained weights from the network unless
pretrained=False), and an architecture (fashion_cnn, fashion_vit, wrn28_10: CIFAR-10's WRN-28-10) with
weights from a file (safetensors, or a torch file read with weights_only=True). A shipped name with a
checkpoint (`--model cnn --checkpoint f.pt`) means its architecture with the checkpoint's weights.

robustbench:NAME[:DATASET[:THREAT]] loads a RobustBench model with RobustBench's own loader
(lst_fast.models.robustbench), py:MODULE:FUNCTION[(key=value, ...)] calls the user's own factory
(lst_fast.models.factory).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Dict, Optional, Tuple, Union

import torch
from torch import nn

from lst_fast.data.preprocessing import IMAGENET_EVAL, Preprocessing, from_timm_config
from lst_fast.errors import EnvironmentFault, InputError, MissingFile
from lst_fast.models.descriptor import ModelDescriptor
from lst_fast.models.fashion import ARCHITECTURES as _FASHION_ARCHITECTURES
from lst_fast.models.wide_resnet import wrn28_10

__all__ = [
    "ARCHITECTURES",
    "MODEL_SPECS",
    "SHIPPED",
    "ModelDescriptor",
    "load_checkpoint",
    "load_model",
    "model_info",
    "resolve_model",
]

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)  # torchvision's ImageNet weights

# Architectures by name, for weights from a checkpoint file.
ARCHITECTURES = {**_FASHION_ARCHITECTURES, "wrn28_10": wrn28_10}

ASSETS = Path(__file__).resolve().parent.parent / "assets"
SHIPPED: Dict[str, str] = {
    "cnn": "fashion_cnn.safetensors",
    "cnn-robust": "fashion_cnn_robust.safetensors",
    "vit": "fashion_vit.safetensors",
}

# Every model name resolve_model takes, in one line: the --model help and the unknown-model error.
MODEL_SPECS = (
    f"{', '.join(SHIPPED)} (shipped), timm:NAME, torchvision:NAME, robustbench:NAME[:DATASET[:THREAT]], "
    f"py:MODULE:FUNCTION[(key=value, ...)], or an architecture ({', '.join(ARCHITECTURES)}) with a checkpoint"
)


def shipped_path(name: str) -> Path:
    if name not in SHIPPED:
        raise InputError(f"unknown model {name!r}; the shipped models are {sorted(SHIPPED)}")
    return ASSETS / SHIPPED[name]


def model_info(name: str) -> dict:
    """Metadata stored with a shipped model: architecture, accuracy, the command that trained it."""
    from safetensors import safe_open

    path = shipped_path(name)
    try:
        with safe_open(str(path), framework="pt") as f:
            return json.loads((f.metadata() or {})["lst_fast_model"])
    except FileNotFoundError:
        raise MissingFile(f"the weights of {name!r} are missing: {path}") from None
    except Exception as error:
        raise InputError(f"{path} is not a readable lst_fast model file: {error}") from error


def load_checkpoint(architecture: str, path: Union[str, Path]) -> nn.Module:
    """Build `architecture` and load weights from a checkpoint (read by the one checkpoint reader,
    `_read_state_dict`: safetensors, or torch.load with weights_only, never pickled code), in eval mode."""
    if architecture not in ARCHITECTURES:
        raise InputError(f"unknown architecture {architecture!r}; known: {sorted(ARCHITECTURES)}")
    state = _read_state_dict(path)
    model = ARCHITECTURES[architecture]()
    model.load_state_dict(state, strict=True)
    return model.eval()


def load_model(name: str, device: Union[str, torch.device] = "cpu") -> nn.Module:
    """A shipped model by name, in eval mode, on `device`."""
    info = model_info(name)
    return load_checkpoint(info["architecture"], shipped_path(name)).to(device)


def _read_state_dict(path: Union[str, Path]) -> Dict[str, torch.Tensor]:
    path = Path(path)
    if not path.is_file():
        raise MissingFile(f"no checkpoint at {path}")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(path))
        state = torch.load(str(path), map_location="cpu", weights_only=True)  # never unpickles code
    except Exception as error:
        raise InputError(f"{path} is not a readable checkpoint (truncated or corrupt?): {error}") from error
    if isinstance(state, dict) and "state_dict" in state:
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise InputError(f"{path} does not hold a state dict")
    return state


def resolve_model(
    spec: str,
    device: Union[str, torch.device] = "cpu",
    pretrained: bool = True,
    checkpoint: Optional[Union[str, Path]] = None,
    model_dir: Optional[Union[str, Path]] = None,
) -> ModelDescriptor:
    """The model named `spec` (see the module docstring), in eval mode on `device`, with its mean/std,
    preprocessing and class names. `model_dir`: RobustBench's checkpoint folder (default ./models)."""
    if not isinstance(spec, str) or not spec:
        raise InputError(f"the model must be a non-empty name, got {spec!r}")
    kind, _, name = spec.partition(":")
    if kind in ("robustbench", "py"):
        if checkpoint is not None:
            raise InputError(
                f"{spec} loads its own weights; a checkpoint applies to the shipped names, the "
                f"architectures {sorted(ARCHITECTURES)}, timm:NAME and torchvision:NAME"
            )
        if kind == "robustbench":
            from lst_fast.models import robustbench

            net, pre, dataset = robustbench.load(spec, model_dir)
            return ModelDescriptor(spec, net.to(device), pre, class_names=_dataset_class_names(dataset))
        from lst_fast.models import factory

        net, pre, mean, std, names = factory.load(spec)
        return ModelDescriptor(spec, net.to(device), pre, mean=mean, std=std, class_names=names)
    if spec in ARCHITECTURES and checkpoint is None:
        raise InputError(f"architecture {spec!r} needs a checkpoint; the shipped models are {sorted(SHIPPED)}")
    if spec in SHIPPED and checkpoint is None:
        net = load_model(spec, device)
    else:
        net = _build(spec, kind, name, pretrained and checkpoint is None)
        if checkpoint is not None:
            try:
                net.load_state_dict(_read_state_dict(checkpoint), strict=True)
            except RuntimeError as error:
                raise InputError(f"{checkpoint} does not fit {spec}: {error}") from error
        net = net.eval().to(device)
    return _describe(spec, kind, net)


def _build(spec: str, kind: str, name: str, pretrained: bool) -> nn.Module:
    """The network of `spec` (weights pretrained where asked, else as built)."""
    if spec in SHIPPED:  # with a checkpoint: the shipped model's architecture, the checkpoint's weights
        return ARCHITECTURES[model_info(spec)["architecture"]]()
    if spec in ARCHITECTURES:
        return ARCHITECTURES[spec]()
    if kind == "timm" and name:
        import timm

        try:
            return timm.create_model(name, pretrained=pretrained)
        except Exception as error:
            raise EnvironmentFault(
                f"could not create timm model {name!r} ({error}); pretrained weights come from "
                "the network (or its cache): pass pretrained=False / --no-pretrained or a checkpoint"
            ) from error
    if kind == "torchvision" and name:
        import torchvision

        try:
            return torchvision.models.get_model(name, weights="DEFAULT" if pretrained else None)
        except Exception as error:
            raise EnvironmentFault(
                f"could not create torchvision model {name!r} ({error}); pretrained weights come "
                "from the network: pass pretrained=False / --no-pretrained or a checkpoint"
            ) from error
    raise InputError(f"unknown model {spec!r}; the models are {MODEL_SPECS}")


def _describe(spec: str, kind: str, net: nn.Module) -> ModelDescriptor:
    """mean/std, preprocessing and class names of a shipped, architecture, timm or torchvision model."""
    if kind == "timm":
        from timm.data import resolve_data_config

        config = resolve_data_config(model=net)
        return ModelDescriptor(
            spec,
            net,
            from_timm_config(config),
            mean=config.get("mean"),
            std=config.get("std"),
            class_names=_timm_class_names(net),
        )
    if kind == "torchvision":
        # torchvision's ImageNet weights: resize 256, crop 224, ImageNet mean/std
        return ModelDescriptor(
            spec,
            net,
            IMAGENET_EVAL,
            mean=IMAGENET_MEAN,
            std=IMAGENET_STD,
            class_names=_torchvision_class_names(spec.partition(":")[2]),
        )
    architecture = model_info(spec)["architecture"] if spec in SHIPPED else spec
    if architecture == "wrn28_10":  # CIFAR-10 images in [0, 1]; no normalization (see wide_resnet.py)
        return ModelDescriptor(spec, net, Preprocessing((3, 32, 32)), class_names=_dataset_class_names("cifar10"))
    return ModelDescriptor(spec, net, Preprocessing((1, 28, 28)), class_names=_dataset_class_names("fashion-mnist"))


def _dataset_class_names(dataset: str) -> Optional[Tuple[str, ...]]:
    if dataset == "fashion-mnist":
        from lst_fast.data.fashion_mnist import CLASSES

        return tuple(CLASSES)
    if dataset == "cifar10":
        from lst_fast.data.sources import CIFAR10_CLASSES

        return CIFAR10_CLASSES
    if dataset == "imagenet":
        try:
            from timm.data import ImageNetInfo

            info = ImageNetInfo("imagenet-1k")
            return tuple(info.index_to_description(k) for k in range(info.num_classes()))
        except Exception:  # noqa: BLE001  an older timm without ImageNetInfo
            return None
    return None


def _timm_class_names(net: nn.Module) -> Optional[Tuple[str, ...]]:
    """timm's names for the ImageNet subset the model was trained on, if it says."""
    try:
        from timm.data import ImageNetInfo, infer_imagenet_subset

        subset = infer_imagenet_subset(net)
        if subset:
            info = ImageNetInfo(subset)
            if info.num_classes() == getattr(net, "num_classes", info.num_classes()):
                return tuple(info.index_to_description(k) for k in range(info.num_classes()))
    except Exception:  # noqa: BLE001  an older timm without ImageNetInfo, or a model outside ImageNet
        pass
    return None


def _torchvision_class_names(name: str) -> Optional[Tuple[str, ...]]:
    try:
        import torchvision

        return tuple(torchvision.models.get_model_weights(name).DEFAULT.meta["categories"])
    except Exception:  # noqa: BLE001  a model without ImageNet weights
        return None
