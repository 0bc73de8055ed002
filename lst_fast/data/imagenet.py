"""ImageNet val as torchvision lays it out: `imagenet:ROOT` is torchvision.datasets.ImageNet(ROOT, split="val").

ROOT holds what the ImageNet site hands out: the devkit ILSVRC2012_devkit_t12.tar.gz and the val images
ILSVRC2012_img_val.tar. On first use torchvision checks both archives (MD5), writes ROOT/meta.bin (the
class names and the val labels, from the devkit) and unpacks the val images into ROOT/val/WNID/ folders;
later uses read meta.bin and ROOT/val only. torchvision reads meta.bin with torch.load(weights_only=True),
which unpickles plain containers of strings and no code.

Classes are in the devkit's order (sorted WordNet IDs: the index every ImageNet model uses) and are named
from the devkit. Images get the model's own resize and crop.

`imagenet-robustbench:ROOT` is the fixed list of 5,000 val images that RobustBench evaluates ImageNet
models on: the file imagenet_test_image_ids.txt inside the installed robustbench package (one
`WNID/FILE.JPEG` per line, relative to ROOT/val), in the file's order. `imagenet-list:FILE:ROOT` takes
such a list from FILE (a path without ':') instead.
"""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional, Sequence, Union

import torch

from lst_fast.data.image_set import ImageSet, image_file_set
from lst_fast.data.preprocessing import IMAGENET_EVAL, Preprocessing
from lst_fast.errors import EnvironmentFault, InputError, MissingFile

DEVKIT = "ILSVRC2012_devkit_t12.tar.gz"
VAL_ARCHIVE = "ILSVRC2012_img_val.tar"
META_FILE = "meta.bin"  # torchvision's parse of the devkit
ROBUSTBENCH_IDS = "imagenet_test_image_ids.txt"
# Where robustbench keeps the list, inside its package (newer releases: data/, older: helper_files/).
ROBUSTBENCH_ID_FOLDERS = ("data", "helper_files")
ROBUSTBENCH_INSTALL = "pip install git+https://github.com/RobustBench/robustbench.git"


def robustbench_image_ids() -> Path:
    """The installed robustbench package's imagenet_test_image_ids.txt; a one-line error when robustbench
    is not installed or does not ship the file."""
    import importlib.util

    try:
        found = importlib.util.find_spec("robustbench")
    except (ImportError, ValueError):
        found = None
    if found is None or not found.submodule_search_locations:
        raise EnvironmentFault(
            f"imagenet-robustbench: reads {ROBUSTBENCH_IDS} from the robustbench package, which is not "
            f"installed; install it with: {ROBUSTBENCH_INSTALL}, or give the list: imagenet-list:FILE:ROOT"
        )
    for folder in found.submodule_search_locations:
        for sub in ROBUSTBENCH_ID_FOLDERS:
            path = Path(folder) / sub / ROBUSTBENCH_IDS
            if path.is_file():
                return path
    raise MissingFile(
        f"the installed robustbench ({', '.join(found.submodule_search_locations)}) has no "
        f"{' or '.join(f'{sub}/{ROBUSTBENCH_IDS}' for sub in ROBUSTBENCH_ID_FOLDERS)}; give the list: "
        "imagenet-list:FILE:ROOT"
    )


def read_image_ids(path: Union[str, Path]) -> List[str]:
    """The `WNID/FILE` lines of an image list (blank lines skipped); ValueError for a malformed line."""
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise MissingFile(f"no image list {path}") from None
    ids = [line.strip() for line in lines if line.strip()]
    bad = next((line for line in ids if line.count("/") != 1), None)
    if bad is not None:
        raise InputError(f"{path}: every line must be WNID/FILE (relative to ROOT/val), got {bad!r}")
    if not ids:
        raise InputError(f"{path} lists no images")
    return ids


def open_imagenet_val(
    root: Union[str, Path],
    preprocessing: Optional[Preprocessing] = None,
    image_ids: Optional[Sequence[str]] = None,
    spec: Optional[str] = None,
) -> ImageSet:
    """The ImageNet validation set under `root` as an ImageSet (see the module docstring); with
    `image_ids` (WNID/FILE names), only those images, in that order."""
    root = Path(root).expanduser()
    spec = spec or f"imagenet:{root}"
    if not root.is_dir():
        raise MissingFile(f"{spec}: no folder {root}; give the folder that holds {DEVKIT} and {VAL_ARCHIVE}")
    if not (root / META_FILE).is_file() and not (root / DEVKIT).is_file():
        raise MissingFile(
            f"{spec}: the ImageNet devkit {root / DEVKIT} is missing (it has the class names "
            "and the val labels); download it from the ImageNet site into that folder"
        )
    if not (root / "val").is_dir() and not (root / VAL_ARCHIVE).is_file():
        raise MissingFile(
            f"{spec}: the val images are missing: neither {root / VAL_ARCHIVE} (from the "
            f"ImageNet site) nor the folder {root / 'val'} unpacked from it"
        )
    if not (root / META_FILE).is_file():
        try:
            import scipy.io  # noqa: F401  torchvision reads the devkit's meta.mat with it
        except ImportError:
            raise EnvironmentFault(
                f"{spec}: reading the devkit the first time needs scipy: "
                'pip install "lst_fast[imagenet]" (or pip install scipy)'
            ) from None
    from torchvision.datasets import ImageNet

    try:
        dataset = ImageNet(str(root), split="val")
    except (RuntimeError, OSError, KeyError, ValueError) as error:  # a corrupt archive, a broken meta.bin
        text = " ".join(str(error).split())
        raise InputError(f"{spec}: torchvision could not read ImageNet val there: {text}") from error
    if not dataset.samples:
        raise MissingFile(f"{spec}: {root / 'val'} holds no images")
    samples = dataset.samples
    if image_ids is not None:
        by_name = {"/".join(Path(path).parts[-2:]): (path, label) for path, label in samples}
        missing = [name for name in image_ids if name not in by_name]
        if missing:
            raise MissingFile(
                f"{spec}: {len(missing)} of the {len(image_ids)} listed images are not in {root / 'val'}, "
                f"e.g. {missing[0]}"
            )
        samples = [by_name[name] for name in image_ids]
    files = [path for path, _ in samples]
    labels = torch.tensor([label for _, label in samples], dtype=torch.long)
    names = tuple(", ".join(names) for names in dataset.classes)  # the devkit's names of each WordNet ID
    return image_file_set(files=files, labels=labels, name=spec, class_names=names, pre=preprocessing or IMAGENET_EVAL)
