"""`--data imagenet:ROOT` on a miniature ImageNet made here: three classes, a few tiny JPEGs, and the
devkit's metadata in the formats torchvision reads (the devkit archive with meta.mat and the val ground
truth; the meta.bin that torchvision writes from it). The real archives are checked by MD5, so the
archive test tells torchvision the miniature's checksums; everything after that is torchvision's own code.
"""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch

from lst_fast.data.preprocessing import Preprocessing
from lst_fast.data.sources import open_image_set
from lst_fast.run_environment import RunEnvironment

# Three real WordNet IDs, in sorted (devkit) order, with their devkit names.
WNIDS = ("n01440764", "n01443537", "n01484850")
WORDS = ("tench, Tinca tinca", "goldfish, Carassius auratus", "great white shark, white shark")
PER_CLASS = 3


def _jpeg(k: int, i: int) -> bytes:
    """A 40x30 JPEG dominated by channel k (class k), a little different per image."""
    from PIL import Image

    rng = np.random.default_rng(10 * k + i)
    pixels = np.full((30, 40, 3), 40, dtype=np.uint8)
    pixels[..., k] = 220
    pixels = np.clip(pixels + rng.integers(-15, 16, pixels.shape), 0, 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG", quality=95)
    return buffer.getvalue()


def _val_images():
    """(file name, class) of every val image, in the val archive's order (classes interleaved)."""
    return [(f"ILSVRC2012_val_{n + 1:08d}.JPEG", n % 3) for n in range(3 * PER_CLASS)]


def make_unpacked(root: Path) -> Path:
    """What torchvision leaves after its first use: meta.bin and val/WNID/*.JPEG."""
    root.mkdir(parents=True, exist_ok=True)
    val_wnids = [WNIDS[k] for _, k in _val_images()]
    torch.save(
        ({w: tuple(words.split(", ")) for w, words in zip(WNIDS, WORDS, strict=True)}, val_wnids), root / "meta.bin"
    )
    for i, (name, k) in enumerate(_val_images()):
        (root / "val" / WNIDS[k]).mkdir(parents=True, exist_ok=True)
        (root / "val" / WNIDS[k] / name).write_bytes(_jpeg(k, i))
    return root


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def make_archives(root: Path) -> dict:
    """The devkit (meta.mat: the synsets, leaf classes first; the val ground truth as ILSVRC IDs) and
    the flat val archive; returns their MD5s."""
    from scipy.io import savemat

    root.mkdir(parents=True, exist_ok=True)
    fields = [("ILSVRC2012_ID", "O"), ("WNID", "O"), ("words", "O"), ("gloss", "O"), ("num_children", "O")]
    synsets = np.array(
        [(k + 1, w, words, "a fish", 0) for k, (w, words) in enumerate(zip(WNIDS, WORDS, strict=True))]
        + [(1001, "n00000001", "fish", "an inner node", 3)],
        dtype=fields,
    )
    mat = io.BytesIO()
    savemat(mat, {"synsets": synsets})
    truth = "".join(f"{k + 1}\n" for _, k in _val_images()).encode()
    with tarfile.open(root / "ILSVRC2012_devkit_t12.tar.gz", "w:gz") as tar:
        _add(tar, "ILSVRC2012_devkit_t12/data/meta.mat", mat.getvalue())
        _add(tar, "ILSVRC2012_devkit_t12/data/ILSVRC2012_validation_ground_truth.txt", truth)
    with tarfile.open(root / "ILSVRC2012_img_val.tar", "w") as tar:
        for i, (name, k) in enumerate(_val_images()):
            _add(tar, name, _jpeg(k, i))
    return {
        key: hashlib.md5((root / file).read_bytes()).hexdigest()
        for key, file in (("devkit", "ILSVRC2012_devkit_t12.tar.gz"), ("val", "ILSVRC2012_img_val.tar"))
    }


def _expected_labels():
    return sorted(k for _, k in _val_images())  # ImageFolder order: class folders sorted, files sorted


def test_unpacked_layout_with_the_models_preprocessing(tmp_path):
    root = make_unpacked(tmp_path / "imagenet")
    data = open_image_set(f"imagenet:{root}", preprocessing=Preprocessing((3, 48, 48), "bicubic", 0.875))
    assert len(data) == 9 and data.labels.tolist() == _expected_labels()
    assert data.class_names == WORDS  # from the devkit's metadata, in its class order
    images = data.get(torch.tensor([0, 4, 8]))
    assert images.shape == (3, 3, 48, 48) and images.dtype == torch.float32 and 0 <= images.min() <= images.max() <= 1
    assert images.mean((2, 3)).argmax(1).tolist() == [0, 1, 2]  # each image's dominant channel is its class
    default = open_image_set(f"imagenet:{root}")  # without a model: resize 256, crop 224
    assert default.get(torch.tensor([0])).shape == (1, 3, 224, 224)


def test_archives_are_parsed_by_torchvision(tmp_path, monkeypatch):
    import torchvision.datasets.imagenet as tv_imagenet

    root = tmp_path / "imagenet"
    md5 = make_archives(root)
    monkeypatch.setitem(tv_imagenet.ARCHIVE_META, "devkit", ("ILSVRC2012_devkit_t12.tar.gz", md5["devkit"]))
    monkeypatch.setitem(tv_imagenet.ARCHIVE_META, "val", ("ILSVRC2012_img_val.tar", md5["val"]))
    data = open_image_set(f"imagenet:{root}", preprocessing=Preprocessing((3, 16, 16)))
    assert (root / "meta.bin").is_file() and sorted(p.name for p in (root / "val").iterdir()) == list(WNIDS)
    assert data.labels.tolist() == _expected_labels() and data.class_names == WORDS
    assert data.get(torch.arange(9)).mean((2, 3)).argmax(1).tolist() == _expected_labels()


def test_missing_devkit_or_val_images_are_clear_errors(tmp_path):
    root = tmp_path / "imagenet"
    root.mkdir()
    with pytest.raises(FileNotFoundError, match="the ImageNet devkit .*ILSVRC2012_devkit_t12.tar.gz is missing"):
        open_image_set(f"imagenet:{root}")
    (root / "ILSVRC2012_devkit_t12.tar.gz").write_bytes(b"not the devkit")
    with pytest.raises(FileNotFoundError, match="the val images are missing: neither .*ILSVRC2012_img_val.tar"):
        open_image_set(f"imagenet:{root}")
    (root / "ILSVRC2012_img_val.tar").write_bytes(b"not the images")
    with pytest.raises(ValueError, match="torchvision could not read ImageNet val there: .*corrupted") as error:
        open_image_set(f"imagenet:{root}")
    assert "\n" not in str(error.value)
    with pytest.raises(FileNotFoundError, match="no folder"):
        open_image_set(f"imagenet:{tmp_path / 'nowhere'}")


def test_eval_on_imagenet_with_a_robustbench_model_end_to_end(tmp_path, monkeypatch, capsys):
    """`lst-fast eval --model robustbench:... --data imagenet:...` with the stand-in robustbench package
    (tests/standins) and the miniature ImageNet: the model's resize-and-crop (256 -> 224) is applied."""
    from test_model_specs import STANDINS, _forget_robustbench, write_checkpoint

    from lst_fast.cli import main

    _forget_robustbench(monkeypatch)
    monkeypatch.syspath_prepend(str(STANDINS))
    root = make_unpacked(tmp_path / "imagenet")
    write_checkpoint(tmp_path / "models", "Salman2020Do_R50")
    out = tmp_path / "out"
    try:
        code = main(
            [
                "eval",
                "--model",
                "robustbench:Salman2020Do_R50",
                "--model-dir",
                str(tmp_path / "models"),
                "--data",
                f"imagenet:{root}",
                "--num-samples",
                "6",
                "--rounds",
                "2",
                "--iterations",
                "2",
                "--chunk-size",
                "3",
                "--out",
                str(out),
                "--no-progress",
            ]
        )
    finally:
        _forget_robustbench(monkeypatch)
    assert code == 0, capsys.readouterr().err
    tables = json.loads((out / "tables.json").read_text())
    assert tables["sources"] == 6 and tables["pairs"] == 12
    from safetensors.torch import load_file

    chunk = load_file(str(next((out / "results").glob("round0*chunk0*"))))
    assert chunk["images"].shape[1:] == (3, 224, 224)


# RobustBench's fixed ImageNet list: the stand-in package ships a six-line imagenet_test_image_ids.txt
# (robustbench/data/), naming six of the miniature's nine val images in its own order.
STANDIN_IDS = Path(__file__).resolve().parent / "standins" / "robustbench" / "data" / "imagenet_test_image_ids.txt"


def test_robustbench_image_list_from_the_installed_package_and_from_a_file(tmp_path, monkeypatch):
    from test_model_specs import STANDINS, _forget_robustbench

    root = make_unpacked(tmp_path / "imagenet")
    _forget_robustbench(monkeypatch)
    monkeypatch.syspath_prepend(str(STANDINS))
    try:
        data = open_image_set(f"imagenet-robustbench:{root}", preprocessing=Preprocessing((3, 16, 16)))
    finally:
        _forget_robustbench(monkeypatch)
    listed = STANDIN_IDS.read_text().split()
    assert len(data) == len(listed) == 6
    assert data.labels.tolist() == [WNIDS.index(line.split("/")[0]) for line in listed]  # the list's order
    assert data.get(torch.arange(6)).mean((2, 3)).argmax(1).tolist() == data.labels.tolist()
    assert data.name == f"imagenet-robustbench:{root}"
    same = open_image_set(f"imagenet-list:{STANDIN_IDS}:{root}", preprocessing=Preprocessing((3, 16, 16)))
    assert torch.equal(same.labels, data.labels) and torch.equal(same.get(torch.arange(6)), data.get(torch.arange(6)))
    (tmp_path / "bad.txt").write_text("n01440764/ILSVRC2012_val_00000001.JPEG\nn09999999/missing.JPEG\n")
    with pytest.raises(FileNotFoundError, match="1 of the 2 listed images are not in"):
        open_image_set(f"imagenet-list:{tmp_path / 'bad.txt'}:{root}")


def test_robustbench_image_list_without_robustbench_is_one_line(tmp_path, monkeypatch):
    import importlib.util

    from test_model_specs import _forget_robustbench

    _forget_robustbench(monkeypatch)
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "robustbench" else real(name, *a))
    with pytest.raises(RuntimeError, match="not installed; install it with") as error:
        open_image_set(f"imagenet-robustbench:{make_unpacked(tmp_path / 'imagenet')}")
    assert "\n" not in str(error.value)


def test_a_pool_on_image_files_is_the_same_with_decoding_workers(tmp_path, monkeypatch):
    """The pool decodes the miniature's JPEG files in worker processes: the same pool as without them."""
    from test_model_specs import STANDINS, _forget_robustbench, write_checkpoint

    from lst_fast.evaluation.pool import build_pool

    root = make_unpacked(tmp_path / "imagenet")
    write_checkpoint(tmp_path / "models", "Salman2020Do_R50")
    _forget_robustbench(monkeypatch)
    monkeypatch.syspath_prepend(str(STANDINS))
    try:
        args = (["robustbench:Salman2020Do_R50"], f"imagenet:{root}", 5, 0.5, 0)
        pools = [
            build_pool(
                *args, env=RunEnvironment(model_dir=str(tmp_path / "models"), workers=w, batch_size=2, progress=False)
            )
            for w in (0, 2)
        ]
    finally:
        _forget_robustbench(monkeypatch)
    (plain, stats0), (parallel, stats2) = pools
    assert stats0.workers == 0 and stats2.workers == 2
    assert plain.digest == parallel.digest and len(plain) == 5
    assert plain.models[0]["preprocessing"]["input_size"] == [3, 224, 224]
