"""ImageNet val as torchvision lays it out: `imagenet:ROOT` is torchvision.datasets.ImageNet(ROOT, split="val").

ROOT holds what the ImageNet site hands out: the devkit ILSVRC2012_devkit_t12.tar.gz and the val images
ILSVRC2012_img_val.tar. On first use torchvision checks both archives (MD5), writes ROOT/meta.bin (the
class names and the val labels, from the devkit) and unpacks the val images into ROOT/val/WNID/ folders;
later uses read meta.bin and ROOT/val only. torchvision reads meta.bin with torch.load(weights_only=True),
which unpickles plain containers of strings and no code.

Classes are in the devkit's order (sorted WordNet IDs: the index every ImageNet model uses) and are named
from the devkit. Images get the model's own resize and crop.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional, Union

import torch

from lst_fast.data.image_set import ImageSet
from lst_fast.data.preprocessing import IMAGENET_EVAL, Preprocessing, image_transform

DEVKIT = "ILSVRC2012_devkit_t12.tar.gz"
VAL_ARCHIVE = "ILSVRC2012_img_val.tar"
META_FILE = "meta.bin"  # torchvision's parse of the devkit


def open_imagenet_val(root: Union[str, Path], preprocessing: Optional[Preprocessing] = None) -> ImageSet:
    """The ImageNet validation set under `root` as an ImageSet (see the module docstring)."""
    root = Path(root).expanduser()
    spec = f"imagenet:{root}"
    if not root.is_dir():
        raise FileNotFoundError(f"{spec}: no folder {root}; give the folder that holds {DEVKIT} and {VAL_ARCHIVE}")
    if not (root / META_FILE).is_file() and not (root / DEVKIT).is_file():
        raise FileNotFoundError(
            f"{spec}: the ImageNet devkit {root / DEVKIT} is missing (it has the class names "
            "and the val labels); download it from the ImageNet site into that folder"
        )
    if not (root / "val").is_dir() and not (root / VAL_ARCHIVE).is_file():
        raise FileNotFoundError(
            f"{spec}: the val images are missing: neither {root / VAL_ARCHIVE} (from the "
            f"ImageNet site) nor the folder {root / 'val'} unpacked from it"
        )
    if not (root / META_FILE).is_file():
        try:
            import scipy.io  # noqa: F401  torchvision reads the devkit's meta.mat with it
        except ImportError:
            raise RuntimeError(
                f"{spec}: reading the devkit the first time needs scipy: "
                'pip install "lst_fast[imagenet]" (or pip install scipy)'
            ) from None
    from torchvision.datasets import ImageNet

    try:
        dataset = ImageNet(str(root), split="val")
    except (RuntimeError, OSError, KeyError, ValueError) as error:  # a corrupt archive, a broken meta.bin
        text = " ".join(str(error).split())
        raise ValueError(f"{spec}: torchvision could not read ImageNet val there: {text}") from error
    if not dataset.samples:
        raise FileNotFoundError(f"{spec}: {root / 'val'} holds no images")
    files = [path for path, _ in dataset.samples]
    labels = torch.tensor([label for _, label in dataset.samples], dtype=torch.long)
    pre = preprocessing or IMAGENET_EVAL
    transform = image_transform(pre)
    mode = "L" if pre.input_size[0] == 1 else "RGB"

    def fetch(index: torch.Tensor) -> torch.Tensor:
        from PIL import Image

        images = []
        for i in index.tolist():
            with Image.open(files[i]) as image:
                images.append(transform(image.convert(mode)))
        return torch.stack(images) if images else torch.empty(0, *pre.input_size)

    names = tuple(", ".join(names) for names in dataset.classes)  # the devkit's names of each WordNet ID
    return ImageSet(labels, fetch, spec, class_names=names)
