"""Image sets and models by name for the evaluation."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lst_fast.data.sources import open_image_set
from lst_fast.models import load_model, resolve_model


def test_cifar10_binary_and_its_errors(tmp_path):
    rng = np.random.default_rng(0)
    records = np.concatenate(
        [np.array([[3], [7], [0]], dtype=np.uint8), rng.integers(0, 256, (3, 3072), dtype=np.uint8)], axis=1
    )
    records.tofile(tmp_path / "test_batch.bin")
    data = open_image_set(f"cifar10:{tmp_path}")
    assert len(data) == 3 and data.labels.tolist() == [3, 7, 0]
    images = data.get(torch.tensor([1, 2]))
    assert images.shape == (2, 3, 32, 32) and images.dtype == torch.float32
    torch.testing.assert_close(images[0, 0, 0, :3], torch.from_numpy(records[1, 1:4] / 255.0).float())
    (tmp_path / "test_batch.bin").write_bytes(records.tobytes()[:-5])
    with pytest.raises(ValueError, match="not a whole number of 3073-byte"):
        open_image_set(f"cifar10:{tmp_path}")
    with pytest.raises(FileNotFoundError, match="test_batch.bin"):
        open_image_set(f"cifar10:{tmp_path / 'missing'}")


def test_tensor_file_and_image_folder(tmp_path):
    from PIL import Image
    from safetensors.torch import save_file

    save_file(
        {"images": torch.randint(0, 256, (4, 1, 5, 5), dtype=torch.uint8), "labels": torch.arange(4)},
        str(tmp_path / "t.safetensors"),
    )
    data = open_image_set(f"tensor:{tmp_path / 't.safetensors'}")
    assert data.get(torch.arange(4)).max() <= 1 and len(data) == 4
    for k, name in enumerate(["cat", "dog"]):
        (tmp_path / "tree" / name).mkdir(parents=True)
        Image.fromarray(np.full((300, 260, 3), 40 * k, dtype=np.uint8)).save(tmp_path / "tree" / name / "a.png")
    tree = open_image_set(f"imagefolder:{tmp_path / 'tree'}")
    assert tree.labels.tolist() == [0, 1] and tree.get(torch.tensor([1])).shape == (1, 3, 224, 224)
    with pytest.raises(ValueError, match="unknown data"):
        open_image_set("mnist")


def test_models_by_name_and_from_checkpoints(tmp_path):
    from safetensors.torch import save_file

    timm_model = resolve_model("timm:resnet18", pretrained=False)
    assert timm_model.module(torch.rand(1, 3, 64, 64)).shape == (1, 1000) and not timm_model.module.training
    assert timm_model.mean == (0.485, 0.456, 0.406) and timm_model.preprocessing.interpolation == "bicubic"
    tv = resolve_model("torchvision:resnet18", pretrained=False)
    assert tv.classifier()(torch.rand(1, 3, 64, 64)).shape == (1, 1000)
    assert tv.input_size == (3, 224, 224) and tv.std == (0.229, 0.224, 0.225)
    shipped = load_model("cnn")
    state = {k: v.contiguous() for k, v in shipped.state_dict().items()}
    save_file(state, str(tmp_path / "w.safetensors"))
    torch.save(state, tmp_path / "w.pt")
    x = torch.rand(3, 1, 28, 28)
    for path in (tmp_path / "w.safetensors", tmp_path / "w.pt"):
        again = resolve_model("fashion_cnn", checkpoint=path)
        assert again.mean is None and again.input_size == (1, 28, 28)  # normalizes inside
        torch.testing.assert_close(again.module(x), shipped(x))
    with pytest.raises(ValueError, match="does not fit"):
        resolve_model("fashion_vit", checkpoint=tmp_path / "w.safetensors")
    with pytest.raises(ValueError, match="needs a checkpoint"):
        resolve_model("fashion_cnn")
    with pytest.raises(ValueError, match="unknown model"):
        resolve_model("resnet")


@pytest.mark.parametrize(
    "images,labels,match",
    [
        (torch.zeros(3, 1, 4, 4, dtype=torch.uint8), torch.arange(5), "'labels' has 5 entries but 'images' has 3"),
        (torch.zeros(5, 1, 4, 4, dtype=torch.uint8), torch.arange(3), "'labels' has 3 entries but 'images' has 5"),
        (torch.zeros(3, 1, 4, 4), torch.tensor([0.0, 1.5, 2.0]), "must be integer class indices, got torch.float32"),
        (
            torch.zeros(3, 1, 4, 4),
            torch.tensor([[0], [1], [2]]),
            r"must have shape \(N,\) = \(3,\).*got shape \(3, 1\)",
        ),
        (torch.zeros(3, 1, 4, 4), torch.tensor([0, -1, 2]), "class indices >= 0, got -1"),
        (torch.zeros(3, 1, 4, 4, dtype=torch.int32), torch.arange(3), "'images' must be uint8"),
    ],
)
def test_tensor_file_with_inconsistent_labels_is_refused(tmp_path, images, labels, match):
    from safetensors.torch import save_file

    path = tmp_path / "bad.safetensors"
    save_file({"images": images, "labels": labels}, str(path))
    with pytest.raises(ValueError, match=f"{path}: .*{match}"):
        open_image_set(f"tensor:{path}")


def test_shipped_name_with_a_checkpoint_uses_its_architecture(tmp_path):
    from safetensors.torch import save_file

    shipped = load_model("cnn")
    state = {k: (v * 0.5 if v.is_floating_point() else v).contiguous() for k, v in shipped.state_dict().items()}
    save_file(state, str(tmp_path / "f.safetensors"))
    torch.save(state, tmp_path / "f.pt")
    x = torch.rand(2, 1, 28, 28)
    want = resolve_model("fashion_cnn", checkpoint=tmp_path / "f.pt").module(x)
    for path in (tmp_path / "f.pt", tmp_path / "f.safetensors"):
        model = resolve_model("cnn", checkpoint=path).classifier()
        torch.testing.assert_close(model(x), want)  # the checkpoint's weights, not the shipped ones
    assert not torch.allclose(want, shipped(x))
    with pytest.raises(ValueError, match="does not fit cnn"):
        resolve_model("cnn", checkpoint=_vit_weights(tmp_path))


def _vit_weights(tmp_path):
    from safetensors.torch import save_file

    state = {k: v.contiguous() for k, v in load_model("vit").state_dict().items()}
    save_file(state, str(tmp_path / "vit.safetensors"))
    return tmp_path / "vit.safetensors"


def test_image_folder_takes_the_models_preprocessing(tmp_path):
    from PIL import Image

    from lst_fast.data.preprocessing import Preprocessing

    for k, name in enumerate(["cat", "dog"]):
        (tmp_path / name).mkdir()
        Image.fromarray(np.full((60, 90, 3), 100 * k, dtype=np.uint8)).save(tmp_path / name / "a.png")
    cifar_sized = open_image_set(f"imagefolder:{tmp_path}", preprocessing=Preprocessing((3, 32, 32)))
    assert cifar_sized.get(torch.tensor([0, 1])).shape == (2, 3, 32, 32)
    assert cifar_sized.class_names == ("cat", "dog")
    grey = open_image_set(f"imagefolder:{tmp_path}", preprocessing=resolve_model("cnn").preprocessing)
    assert grey.get(torch.tensor([1])).shape == (1, 1, 28, 28)
