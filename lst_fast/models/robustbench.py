"""Models from the RobustBench model zoo: `robustbench:NAME[:DATASET[:THREAT]]` (defaults imagenet, Linf).

RobustBench's own loader builds the model and reads its checkpoint from
MODEL_DIR/DATASET/THREAT/NAME.pt (downloading it there first when the file is missing and the network is
there). Its models take images in [0, 1] and normalize inside, so the descriptor's mean/std are None. For
the paper's four this was read in the zoo's source: Salman2020Do_R50 and Singh2023Revisiting_ViT-S-ConvStem
are wrapped with the ImageNet mean/std inside; the CIFAR-10 Standard and Wu2020Adversarial_extra
WideResNets were trained on [0, 1] images and normalize nothing. The resize and crop come from the zoo's
entry for the model (ImageNet), or none (CIFAR: 32x32 as stored).

RobustBench reads checkpoints with torch.load; under torch 2.6 and later that is weights-only by default,
and lst_fast does not change it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional, Tuple, Union

from torch import nn

from lst_fast.data.preprocessing import Preprocessing
from lst_fast.errors import EnvironmentFault, InputError, InputTypeError, MissingFile, one_line

INSTALL = "pip install git+https://github.com/RobustBench/robustbench.git"
DATASETS = ("cifar10", "cifar100", "imagenet")
THREATS = {"linf": "Linf", "l2": "L2", "corruptions": "corruptions"}
DEFAULT_MODEL_DIR = "./models"  # RobustBench's own default

# The zoo's preprocessing names (ImageNet), as lst_fast's resize-and-crop.
PREPROCESSINGS = {
    "Res256Crop224": Preprocessing((3, 224, 224), "bilinear", 224 / 256, "center"),
    "BicubicRes256Crop224": Preprocessing((3, 224, 224), "bicubic", 224 / 256, "center"),
    "Res224": Preprocessing((3, 224, 224), "bilinear", 1.0, "squash"),
}
STORED_32 = Preprocessing((3, 32, 32), "bilinear", 1.0, "center")  # CIFAR images are used as stored


def parse_spec(spec: str) -> Tuple[str, str, str]:
    """(name, dataset, threat model) of `robustbench:NAME[:DATASET[:THREAT]]`."""
    parts = spec.split(":")
    if parts[0] != "robustbench" or len(parts) < 2 or len(parts) > 4 or not parts[1]:
        raise InputError(f"a RobustBench model is robustbench:NAME[:DATASET[:THREAT]], got {spec!r}")
    name = parts[1]
    dataset = (parts[2] if len(parts) > 2 else "imagenet").lower()
    threat = parts[3] if len(parts) > 3 else "Linf"
    if dataset not in DATASETS:
        raise InputError(f"{spec}: the data set must be one of {DATASETS}, got {dataset!r}")
    if threat.lower() not in THREATS:
        raise InputError(f"{spec}: the threat model must be one of {sorted(set(THREATS.values()))}, got {threat!r}")
    return name, dataset, THREATS[threat.lower()]


def checkpoint_path(name: str, dataset: str, threat: str, model_dir: Union[str, Path, None]) -> Path:
    """Where RobustBench looks for the checkpoint of `name`."""
    return Path(model_dir or DEFAULT_MODEL_DIR) / dataset / threat / f"{name}.pt"


def load(spec: str, model_dir: Union[str, Path, None] = None) -> Tuple[nn.Module, Preprocessing, str]:
    """(module, preprocessing, data set) of a RobustBench model; one-line errors for a missing package,
    an unknown name and a checkpoint that is missing and cannot be downloaded."""
    name, dataset, threat = parse_spec(spec)
    try:
        from robustbench.utils import load_model
    except ImportError as error:
        if (error.name or "").split(".")[0] == "robustbench":
            raise EnvironmentFault(
                f"{spec} needs the robustbench package (from its repository: its release on the package "
                f"index does not import); install it with: {INSTALL}"
            ) from None
        raise EnvironmentFault(f"robustbench is installed but does not import: {one_line(error)}") from error
    path = checkpoint_path(name, dataset, threat, model_dir)
    had_file = path.is_file() or Path(f"{path}_m0.pt").is_file()  # ensembles keep NAME.pt_m0.pt, ...
    preprocessing = zoo_preprocessing(name, dataset, threat)
    try:
        module = load_model(
            model_name=name, model_dir=str(model_dir or DEFAULT_MODEL_DIR), dataset=dataset, threat_model=threat
        )
    except KeyError:
        raise InputError(f"RobustBench has no model {name!r} for {dataset} / {threat}") from None
    except Exception as error:  # noqa: BLE001  a download that failed, or an unreadable checkpoint
        if not had_file:
            raise MissingFile(
                f"{spec}: no checkpoint {path.absolute()}, where RobustBench looks for it "
                f"(MODEL_DIR/{dataset}/{threat}/{name}.pt, MODEL_DIR from --model-dir, default ./models), and "
                f"downloading it failed ({one_line(error)}): put the file there, or run once with network "
                "access"
            ) from None
        raise EnvironmentFault(f"{spec}: RobustBench could not load {path}: {one_line(error)}") from error
    if not isinstance(module, nn.Module):
        raise InputTypeError(f"{spec}: robustbench.utils.load_model returned {type(module).__name__}, not a module")
    return module.eval(), preprocessing, dataset


def zoo_preprocessing(name: str, dataset: str, threat: str) -> Preprocessing:
    """The resize and crop of the zoo's entry for the model (ImageNet); CIFAR images as stored."""
    if dataset != "imagenet":
        return STORED_32
    entry = _zoo_entry(name, dataset, threat) or {}
    key = entry.get("preprocessing") or "Res256Crop224"  # RobustBench's own default for ImageNet
    if key not in PREPROCESSINGS:
        raise InputError(
            f"robustbench:{name}: its preprocessing {key!r} is not one lst_fast reproduces "
            f"(it knows {sorted(PREPROCESSINGS)})"
        )
    return PREPROCESSINGS[key]


def _zoo_entry(name: str, dataset: str, threat: str) -> Optional[dict]:
    """The model zoo's dict for the model, if this robustbench has one (keys are enums with string
    values, or strings)."""
    try:
        from robustbench.model_zoo import model_dicts
    except ImportError:
        return None
    for ds, by_threat in model_dicts.items():
        if getattr(ds, "value", ds) == dataset:
            for tm, models in by_threat.items():
                if getattr(tm, "value", tm) == threat and name in models:
                    return models[name]
    return None
