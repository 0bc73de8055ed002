"""Fashion-MNIST (Zalando Research, MIT licence): 28x28 grey images of 10 kinds of clothing.

Where the files come from, in order: the `root` argument, $LST_FAST_DATA, Debian's package
`dataset-fashion-mnist` (/usr/share/datasets/fashion-mnist), a previous download in
~/.cache/lst_fast/fashion-mnist, or a download from the official source when `download=True`.
A 100-image sample (10 per class, from the test split) ships inside the package: load_sample().
"""

from __future__ import annotations

import gzip
import hashlib
import math
import os
import urllib.request
from pathlib import Path
from typing import Optional, Tuple, Union

import numpy as np
import torch
from torch import Tensor

from lst_fast.errors import InputError, MissingFile

CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")
DEBIAN_DIR = Path("/usr/share/datasets/fashion-mnist")
CACHE_DIR = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "lst_fast" / "fashion-mnist"
URL = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"
FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}
# SHA-256 of the decompressed files (the compressed bytes differ between mirrors).
SHA256 = {
    "train-images-idx3-ubyte.gz": "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
    "train-labels-idx1-ubyte.gz": "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
    "t10k-images-idx3-ubyte.gz": "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
    "t10k-labels-idx1-ubyte.gz": "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
}
SAMPLE = Path(__file__).resolve().parent.parent / "assets" / "fashion_mnist_sample.safetensors"


def parse_idx(data: bytes, name: str = "IDX data") -> np.ndarray:
    """Decode an (uncompressed) IDX file of unsigned bytes; ValueError when it is malformed."""
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != 0x08:
        raise InputError(f"{name} is not an IDX file of unsigned bytes (bad magic number)")
    ndim = data[3]
    header = 4 + 4 * ndim
    if ndim == 0 or len(data) < header:
        raise InputError(f"{name} has a truncated IDX header")
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    expected = header + math.prod(shape)  # Python integers: sizes that overflow int64 cannot wrap to a match
    if len(data) != expected:
        raise InputError(
            f"{name} holds {len(data)} bytes but its header {shape} needs {expected}: truncated or corrupt"
        )
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(shape)


def _read(path: Path) -> np.ndarray:
    try:
        with gzip.open(path, "rb") as f:
            data = f.read()
    except (OSError, EOFError) as error:
        raise InputError(f"{path} is not a readable gzip file ({error}); delete it or fetch it again") from error
    return parse_idx(data, str(path))


def _find_dir(root: Optional[Union[str, os.PathLike]], split: str) -> Optional[Path]:
    candidates = [Path(root)] if root is not None else []
    if root is None:
        if os.environ.get("LST_FAST_DATA"):
            candidates.append(Path(os.environ["LST_FAST_DATA"]))
        candidates += [DEBIAN_DIR, CACHE_DIR]
    for directory in candidates:
        if all((directory / name).is_file() for name in FILES[split]):
            return directory
    return None


def download(directory: Path = CACHE_DIR) -> Path:
    """Fetch the four files from the official source into `directory`, checking their SHA-256."""
    directory.mkdir(parents=True, exist_ok=True)
    for name, digest in SHA256.items():
        target = directory / name
        if target.is_file():
            continue
        tmp = target.with_suffix(".part")
        urllib.request.urlretrieve(URL + name, tmp)
        with gzip.open(tmp, "rb") as f:
            got = hashlib.sha256(f.read()).hexdigest()
        if got != digest:
            tmp.unlink(missing_ok=True)
            raise InputError(f"downloaded {name} has SHA-256 {got}, expected {digest}")
        tmp.replace(target)
    return directory


def load_fashion_mnist(
    split: str = "test", root: Optional[Union[str, os.PathLike]] = None, download_if_missing: bool = False
) -> Tuple[Tensor, Tensor]:
    """Images (N, 1, 28, 28) uint8 and labels (N,) int64 of the train or test split."""
    if split not in FILES:
        raise InputError(f"split must be 'train' or 'test', got {split!r}")
    directory = _find_dir(root, split)
    if directory is None:
        if not download_if_missing:
            where = f"in {root}" if root is not None else f"in $LST_FAST_DATA, {DEBIAN_DIR} or {CACHE_DIR}"
            raise MissingFile(
                f"Fashion-MNIST {split} files {FILES[split]} not found {where}. Install them with "
                "`apt-get install dataset-fashion-mnist`, give a folder holding them (--data-root DIR, "
                "$LST_FAST_DATA, or root= in Python), fetch them from Python with "
                "lst_fast.data.fashion_mnist.load_fashion_mnist(split, download_if_missing=True), or use "
                "the 100 images shipped with the package (--data fashion-mnist-sample)."
            )
        directory = download(Path(root) if root is not None else CACHE_DIR)
    images = _read(directory / FILES[split][0])
    labels = _read(directory / FILES[split][1])
    if images.ndim != 3 or images.shape[1:] != (28, 28) or labels.shape != (images.shape[0],):
        raise InputError(f"Fashion-MNIST files in {directory} have unexpected shapes {images.shape}, {labels.shape}")
    if labels.max() >= len(CLASSES):
        raise InputError(f"Fashion-MNIST labels in {directory} go up to {labels.max()}, expected < {len(CLASSES)}")
    return torch.from_numpy(images.copy()).unsqueeze(1), torch.from_numpy(labels.astype(np.int64))


def load_sample() -> Tuple[Tensor, Tensor]:
    """The shipped sample: 10 test images per class, (100, 1, 28, 28) uint8 and labels (100,)."""
    from safetensors.torch import load_file

    tensors = load_file(str(SAMPLE))
    return tensors["images"], tensors["labels"]


def to_float(images: Tensor) -> Tensor:
    """uint8 images to float32 in [0, 1]."""
    return images.to(torch.float32) / 255.0
