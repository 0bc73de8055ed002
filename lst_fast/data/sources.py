"""Image sets for the evaluation, by name: images in [0, 1] fetched by index, labels in memory.

    fashion-mnist          Fashion-MNIST test split (Debian package, $LST_FAST_DATA or --data-root)
    fashion-mnist-sample   the 100 images shipped in the package
    cifar10:DIR            CIFAR-10 test batch, binary version (DIR holds test_batch.bin); no unpickling
    imagefolder:DIR        class-per-folder tree (classes in sorted folder order)
    imagenet:ROOT          ImageNet val through torchvision.datasets.ImageNet(ROOT, split="val")
                           (lst_fast.data.imagenet: the devkit's class order and names)
    imagenet-robustbench:ROOT  the 5,000 val images RobustBench evaluates on (the list in the installed
                           robustbench package)
    imagenet-list:FILE:ROOT    the val images listed in FILE (WNID/FILE.JPEG lines), in its order
    tensor:FILE            a safetensors file with "images" (N, C, H, W; uint8 or float in [0, 1]) and "labels"

Image files (imagefolder, imagenet) are resized and cropped with the model's own preprocessing, passed as
`preprocessing` (a ModelDescriptor's); without one, resize 256 and center crop 224.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import numpy as np
import torch
from torch import Tensor

from lst_fast.data.decoded import opened_once
from lst_fast.data.image_set import ImageSet, image_file_set
from lst_fast.data.preprocessing import IMAGENET_EVAL, Preprocessing
from lst_fast.errors import InputError, MissingFile

__all__ = ["CIFAR10_CLASSES", "DATA_SPECS", "ImageSet", "check_tensor_data", "open_image_set", "read_cifar10_binary"]

# Every data set open_image_set takes, in one line: the --data help and the unknown-data error.
DATA_SPECS = (
    "fashion-mnist, fashion-mnist-sample, cifar10:DIR, imagefolder:DIR, imagenet:ROOT, "
    "imagenet-robustbench:ROOT, imagenet-list:FILE:ROOT or tensor:FILE"
)

CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")


def _in_memory(images: Tensor, labels: Tensor, name: str, class_names=None) -> ImageSet:
    def fetch(index: Tensor) -> Tensor:
        batch = images[index]
        return batch.to(torch.float32) / 255.0 if batch.dtype == torch.uint8 else batch.to(torch.float32)

    return ImageSet(labels, fetch, name, class_names, in_memory=True)


def check_tensor_data(images: Tensor, labels: Tensor, name: str) -> None:
    """ValueError naming the file unless images are uint8 or floating and labels are N integer class
    indices (N = number of images, no dimension but one, none negative)."""
    if images.dtype != torch.uint8 and not images.is_floating_point():
        raise InputError(f"{name}: 'images' must be uint8 (0-255) or floating-point in [0, 1], got {images.dtype}")
    if labels.dim() != 1:
        raise InputError(
            f"{name}: 'labels' must have shape (N,) = ({images.shape[0]},), one class index per "
            f"image, got shape {tuple(labels.shape)}"
        )
    if labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool:
        raise InputError(f"{name}: 'labels' must be integer class indices, got {labels.dtype}")
    if labels.shape[0] != images.shape[0]:
        raise InputError(
            f"{name}: 'labels' has {labels.shape[0]} entries but 'images' has {images.shape[0]} "
            "images; they must match one to one"
        )
    if labels.numel() and int(labels.min()) < 0:
        raise InputError(f"{name}: 'labels' must be class indices >= 0, got {int(labels.min())}")


def read_cifar10_binary(directory: Path) -> tuple:
    """CIFAR-10 test batch from the binary version: records of 1 label byte and 3072 pixel bytes."""
    path = Path(directory) / "test_batch.bin"
    if not path.is_file():
        raise MissingFile(
            f"{path} not found: give the folder of the CIFAR-10 binary version "
            "(cifar-10-batches-bin), which holds test_batch.bin"
        )
    data = np.fromfile(path, dtype=np.uint8)
    if data.size == 0 or data.size % 3073:
        raise InputError(f"{path} holds {data.size} bytes, not a whole number of 3073-byte CIFAR-10 records")
    records = data.reshape(-1, 3073)
    labels = torch.from_numpy(records[:, 0].astype(np.int64))
    if int(labels.max()) > 9:
        raise InputError(f"{path} has labels up to {int(labels.max())}; CIFAR-10 has 10 classes")
    images = torch.from_numpy(records[:, 1:].copy()).view(-1, 3, 32, 32)
    return images, labels


def _image_folder(directory: Path, pre: Preprocessing) -> ImageSet:
    root = Path(directory)
    classes = sorted(p.name for p in root.iterdir() if p.is_dir()) if root.is_dir() else []
    if not classes:
        raise MissingFile(f"{root} has no class folders (expected ROOT/CLASS/IMAGE files)")
    files, labels = [], []
    for k, name in enumerate(classes):
        for f in sorted((root / name).iterdir()):
            if f.suffix.lower() in {".jpg", ".jpeg", ".png", ".bmp", ".webp"}:
                files.append(f)
                labels.append(k)
    if not files:
        raise MissingFile(f"{root} has class folders but no images in them")
    return image_file_set(
        files=files, labels=torch.tensor(labels), name=f"imagefolder:{root}", class_names=classes, pre=pre
    )


def open_image_set(spec: str, root: Optional[str] = None, preprocessing: Optional[Preprocessing] = None) -> ImageSet:
    """An image set from its name (see the module docstring); `preprocessing` resizes and crops image files.
    Inside a command's decoding scope (lst_fast.data.decoded) the data set is opened once and each image
    decoded once per preprocessing."""
    return opened_once(spec, root, preprocessing, _open)


def _open(spec: str, root: Optional[str], preprocessing: Optional[Preprocessing]) -> ImageSet:
    from lst_fast.data.fashion_mnist import CLASSES, load_fashion_mnist, load_sample

    kind, _, arg = spec.partition(":")
    if spec == "fashion-mnist":
        images, labels = load_fashion_mnist("test", root)
        return _in_memory(images, labels, spec, CLASSES)
    if spec == "fashion-mnist-sample":
        images, labels = load_sample()
        return _in_memory(images, labels, spec, CLASSES)
    if kind == "cifar10" and arg:
        images, labels = read_cifar10_binary(Path(arg))
        return _in_memory(images, labels, spec, CIFAR10_CLASSES)
    if kind == "imagefolder" and arg:
        return _image_folder(Path(arg), preprocessing or IMAGENET_EVAL)
    if kind == "imagenet" and arg:
        from lst_fast.data.imagenet import open_imagenet_val

        return open_imagenet_val(arg, preprocessing)
    if kind == "imagenet-robustbench" and arg:
        from lst_fast.data.imagenet import open_imagenet_val, read_image_ids, robustbench_image_ids

        return open_imagenet_val(arg, preprocessing, read_image_ids(robustbench_image_ids()), spec)
    if kind == "imagenet-list" and ":" in arg:
        from lst_fast.data.imagenet import open_imagenet_val, read_image_ids

        ids_file, _, root = arg.partition(":")
        return open_imagenet_val(root, preprocessing, read_image_ids(ids_file), spec)
    if kind == "tensor" and arg:
        from safetensors.torch import load_file

        try:
            tensors = load_file(arg)
        except FileNotFoundError:
            raise MissingFile(f"no tensor file at {arg}") from None
        except Exception as error:
            raise InputError(f"{arg} is not a readable safetensors file: {error}") from error
        if "images" not in tensors or "labels" not in tensors or tensors["images"].dim() != 4:
            raise InputError(f"{arg} must hold 'images' (N, C, H, W) and 'labels' (N,)")
        images, labels = tensors["images"], tensors["labels"]
        check_tensor_data(images, labels, arg)
        return _in_memory(images, labels, spec)
    raise InputError(f"unknown data {spec!r}: use {DATA_SPECS}")
