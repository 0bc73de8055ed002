"""Models by name beyond the shipped ones: the ModelDescriptor every command reads,
`robustbench:NAME[:DATASET[:THREAT]]` and `py:MODULE:FUNCTION[(key=value, ...)]`.

RobustBench is not installed here (it installs from its repository and downloads its checkpoints). The
robustbench tests put a STAND-IN package on sys.path (tests/standins/robustbench): the same
`load_model(model_name, model_dir, dataset, threat_model)` signature and checkpoint layout, returning a
tiny colour classifier. They prove lst_fast's side (the call, the descriptor, the messages, the CLI end
to end), not that the real zoo's models load.
"""

from __future__ import annotations

import dataclasses
import json
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from lst_fast.models import ModelDescriptor, resolve_model
from lst_fast.models.robustbench import INSTALL

STANDINS = Path(__file__).resolve().parent / "standins"
COLOURS = torch.eye(3)  # class k: an image dominated by channel k


def _forget_robustbench(monkeypatch) -> None:
    for name in [m for m in sys.modules if m == "robustbench" or m.startswith("robustbench.")]:
        monkeypatch.delitem(sys.modules, name)


@pytest.fixture
def standin_robustbench(monkeypatch):
    """The stand-in robustbench package importable for one test."""
    _forget_robustbench(monkeypatch)
    monkeypatch.syspath_prepend(str(STANDINS))
    yield
    for name in [m for m in list(sys.modules) if m == "robustbench" or m.startswith("robustbench.")]:
        del sys.modules[name]


def write_checkpoint(model_dir: Path, name: str, dataset: str = "imagenet", threat: str = "Linf") -> Path:
    """A checkpoint for the stand-in's colour classifier where RobustBench keeps it: class k = channel k."""
    path = model_dir / dataset / threat / f"{name}.pt"
    path.parent.mkdir(parents=True, exist_ok=True)
    mean, std = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)) if dataset == "imagenet" else ((0.0,) * 3, (1.0,) * 3)
    torch.save(
        {
            "mu": torch.tensor(mean).reshape(1, 3, 1, 1),
            "sigma": torch.tensor(std).reshape(1, 3, 1, 1),
            "linear.weight": 10 * torch.eye(3),
            "linear.bias": torch.zeros(3),
        },
        path,
    )
    return path


def colour_images(n_per_class: int = 4, size: int = 32, seed: int = 0):
    """(images, labels): class k is channel k bright, the others dark, with noise."""
    gen = torch.Generator().manual_seed(seed)
    labels = torch.arange(3).repeat_interleave(n_per_class)
    images = (
        0.15 + 0.7 * COLOURS[labels][:, :, None, None] + 0.1 * torch.rand(len(labels), 3, size, size, generator=gen)
    )
    return images.clamp(0, 1), labels


def test_descriptor_checks_its_fields():
    from lst_fast.data.preprocessing import Preprocessing

    net = torch.nn.Identity()
    pre = Preprocessing((3, 8, 8))
    with pytest.raises(ValueError, match="both mean and std, or neither"):
        ModelDescriptor("x", net, pre, mean=(0.5, 0.5, 0.5))
    with pytest.raises(ValueError, match=r"x: mean must have 1 or 3 \(channels\) values, got 2"):
        ModelDescriptor("x", net, pre, mean=(0.5, 0.5), std=(1.0, 1.0))
    with pytest.raises(ValueError, match=r"x: std must be > 0"):
        ModelDescriptor("x", net, pre, mean=0.5, std=0.0)
    with pytest.raises(TypeError, match="must be a torch.nn.Module"):
        ModelDescriptor("x", "not a module", pre)
    with pytest.raises(ValueError, match="input_size must be three positive integers"):
        Preprocessing((3, 0, 8))
    described = ModelDescriptor("x", net, pre, mean=[0.5] * 3, std=torch.tensor([0.25] * 3), class_names=["a", "b"])
    assert described.mean == (0.5, 0.5, 0.5) and described.std == (0.25, 0.25, 0.25)
    x = torch.rand(2, 3, 8, 8)
    torch.testing.assert_close(described.classifier()(x), (x - 0.5) / 0.25)
    assert described.class_name(1) == "b" and described.class_name(5) == "class 5"
    with pytest.raises(dataclasses.FrozenInstanceError):
        described.mean = None


def test_shipped_and_timm_descriptors_carry_what_was_hard_coded():
    cnn = resolve_model("cnn")
    assert cnn.mean is None and cnn.input_size == (1, 28, 28) and cnn.class_names[0] == "T-shirt/top"
    timm_model = resolve_model("timm:resnet18", pretrained=False)
    assert timm_model.preprocessing.crop_pct == 0.95 and timm_model.class_names[0].startswith("tench")
    small = timm_model.preprocessing.with_size(64)
    assert small.input_size == (3, 64, 64) and small.interpolation == "bicubic"


def test_robustbench_model_through_the_standin(standin_robustbench, tmp_path):
    write_checkpoint(tmp_path, "Salman2020Do_R50")
    described = resolve_model("robustbench:Salman2020Do_R50", model_dir=tmp_path)
    assert described.mean is None and described.std is None  # normalizes inside
    assert described.preprocessing.input_size == (3, 224, 224) and described.preprocessing.crop_pct == 0.875
    assert described.class_names[0].startswith("tench") and len(described.class_names) == 1000
    images, labels = colour_images()
    assert torch.equal(described.classifier()(images).argmax(1), labels)  # the checkpoint's weights
    write_checkpoint(tmp_path, "Singh2023Revisiting_ViT-S-ConvStem")
    vit = resolve_model("robustbench:Singh2023Revisiting_ViT-S-ConvStem:imagenet:linf", model_dir=tmp_path)
    assert vit.preprocessing.interpolation == "bicubic"
    write_checkpoint(tmp_path, "Standard", "cifar10")
    cifar = resolve_model("robustbench:Standard:cifar10", model_dir=tmp_path)
    assert cifar.input_size == (3, 32, 32) and cifar.class_names[0] == "airplane"


def test_robustbench_errors_are_one_line(standin_robustbench, tmp_path):
    with pytest.raises(FileNotFoundError) as missing:
        resolve_model("robustbench:Salman2020Do_R50", model_dir=tmp_path / "models")
    text = str(missing.value)
    assert "\n" not in text
    assert str(tmp_path / "models" / "imagenet" / "Linf" / "Salman2020Do_R50.pt") in text
    assert "downloading it failed (ConnectionError: HTTPSConnectionPool" in text and "--model-dir" in text
    with pytest.raises(ValueError, match="RobustBench has no model 'Nobody2020' for imagenet / Linf"):
        resolve_model("robustbench:Nobody2020", model_dir=tmp_path)
    with pytest.raises(ValueError, match="the data set must be one of"):
        resolve_model("robustbench:Standard:mnist")
    with pytest.raises(ValueError, match="preprocessing 'Crop288' is not one lst_fast reproduces"):
        resolve_model("robustbench:Wong2020Fast", model_dir=tmp_path)
    with pytest.raises(ValueError, match="loads its own weights"):
        resolve_model("robustbench:Standard:cifar10", checkpoint=tmp_path / "w.pt")


def test_missing_robustbench_package_is_one_line_with_the_install_command(monkeypatch):
    _forget_robustbench(monkeypatch)
    monkeypatch.setitem(sys.modules, "robustbench", None)  # not installed
    with pytest.raises(RuntimeError) as error:
        resolve_model("robustbench:Salman2020Do_R50")
    assert "\n" not in str(error.value) and str(error.value).endswith(f"install it with: {INSTALL}")


FACTORY = """
import torch
from torch import nn


class Scaled(nn.Module):
    def __init__(self, scale):
        super().__init__()
        self.linear = nn.Linear(3, 3)
        with torch.no_grad():
            self.linear.weight.copy_(scale * torch.eye(3))
            self.linear.bias.zero_()

    def forward(self, x):
        return self.linear(x.mean((2, 3)))


def build(scale=10.0, size=32, names=("red", "green", "blue")):
    model = Scaled(scale)
    model.lst_mean, model.lst_std = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)
    model.lst_input_size = (3, size, size)
    model.lst_class_names = names
    return model


def plain():
    return Scaled(1.0)


def not_a_model():
    return 42


NOT_CALLABLE = 3
"""


@pytest.fixture
def factory_module(tmp_path, monkeypatch):
    """A user's factory module in the current folder (as `lst-fast` would find it)."""
    name = f"user_models_{tmp_path.name}".replace("-", "_")
    (tmp_path / f"{name}.py").write_text(textwrap.dedent(FACTORY))
    monkeypatch.chdir(tmp_path)
    yield name
    sys.modules.pop(name, None)


def test_py_factory_with_keywords_and_attributes(factory_module, tmp_path):
    described = resolve_model(f"py:{factory_module}:build(scale=4.0, size=48, names=['r', 'g', 'b'])")
    assert described.mean == (0.5, 0.5, 0.5) and described.std == (0.25,) * 3
    assert described.input_size == (3, 48, 48) and described.class_names == ("r", "g", "b")
    assert described.module.linear.weight[0, 0] == 4.0 and not described.module.training
    images, labels = colour_images()
    assert torch.equal(described.classifier()(images).argmax(1), labels)
    plain = resolve_model(f"py:{factory_module}:plain")
    assert plain.mean is None and plain.input_size == (3, 224, 224) and plain.class_names is None
    by_path = resolve_model(f"py:{tmp_path / factory_module}.py:build")
    assert by_path.module.linear.weight[0, 0] == 10.0


@pytest.mark.parametrize(
    "suffix,error,match",
    [
        (":nothing", ValueError, "has no 'nothing'"),
        (":NOT_CALLABLE", ValueError, r"is not callable \(a int\)"),
        (":not_a_model", TypeError, "not_a_model returned int, not a torch.nn.Module"),
        (":build(1, 2)", ValueError, "keyword arguments only"),
        (":build(scale=__import__('os'))", ValueError, "must be a Python literal"),
        (":build(scale=", ValueError, "a factory model is py:MODULE:FUNCTION"),
        (":build(colour=1)", ValueError, "calling build"),
    ],
)
def test_py_factory_errors(factory_module, suffix, error, match):
    with pytest.raises(error, match=match):
        resolve_model(f"py:{factory_module}{suffix}")


def test_py_missing_module_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ValueError, match="no Python module 'no_such_models'"):
        resolve_model("py:no_such_models:build")
    with pytest.raises(FileNotFoundError, match="no Python file"):
        resolve_model(f"py:{tmp_path / 'gone.py'}:build")


# End to end: `lst-fast eval` with the stand-ins, a few iterations on a few images (seconds on a CPU).


def _tensor_data(path: Path) -> str:
    from safetensors.torch import save_file

    images, labels = colour_images(n_per_class=2)
    save_file({"images": images.contiguous(), "labels": labels}, str(path))
    return f"tensor:{path}"


EVAL_SMALL = ["--num-samples", "6", "--rounds", "2", "--iterations", "2", "--chunk-size", "4", "--no-progress"]


def test_eval_with_a_robustbench_model_end_to_end(standin_robustbench, tmp_path, capsys):
    from lst_fast.cli import main

    write_checkpoint(tmp_path / "rb", "Wu2020Adversarial_extra", "cifar10")
    out = tmp_path / "out"
    code = main(
        [
            "eval",
            "--model",
            "robustbench:Wu2020Adversarial_extra:cifar10:Linf",
            "--model-dir",
            str(tmp_path / "rb"),
            "--data",
            _tensor_data(tmp_path / "d.safetensors"),
            "--out",
            str(out),
            *EVAL_SMALL,
        ]
    )
    assert code == 0, capsys.readouterr().err
    tables = json.loads((out / "tables.json").read_text())
    assert tables["sources"] == 6 and tables["pairs"] == 12
    assert json.loads((out / "config.json").read_text())["model"] == "robustbench:Wu2020Adversarial_extra:cifar10:Linf"


def test_eval_robustbench_without_checkpoint_says_so_in_one_line(standin_robustbench, tmp_path, capsys):
    from lst_fast.cli import main

    code = main(
        [
            "eval",
            "--model",
            "robustbench:Standard:cifar10",
            "--model-dir",
            str(tmp_path / "rb"),
            "--data",
            _tensor_data(tmp_path / "d.safetensors"),
            "--out",
            str(tmp_path / "out"),
            *EVAL_SMALL,
        ]
    )
    err = capsys.readouterr().err
    assert code == 1 and err.count("\n") == 1
    assert str(tmp_path / "rb" / "cifar10" / "Linf" / "Standard.pt") in err


def test_eval_without_robustbench_gives_the_install_command(monkeypatch, tmp_path, capsys):
    from lst_fast.cli import main

    _forget_robustbench(monkeypatch)
    monkeypatch.setitem(sys.modules, "robustbench", None)
    code = main(
        [
            "eval",
            "--model",
            "robustbench:Standard:cifar10",
            "--data",
            _tensor_data(tmp_path / "d.safetensors"),
            "--out",
            str(tmp_path / "out"),
            *EVAL_SMALL,
        ]
    )
    err = capsys.readouterr().err
    assert code == 1 and err.count("\n") == 1 and INSTALL in err


def test_eval_with_a_py_factory_end_to_end(factory_module, tmp_path, capsys):
    from lst_fast.cli import main

    out = tmp_path / "out"
    code = main(
        [
            "eval",
            "--model",
            f"py:{factory_module}:build(scale=10.0)",
            "--data",
            _tensor_data(tmp_path / "d.safetensors"),
            "--out",
            str(out),
            *EVAL_SMALL,
        ]
    )
    assert code == 0, capsys.readouterr().err
    assert json.loads((out / "tables.json").read_text())["pairs"] == 12


def test_run_with_a_py_factory_uses_its_attributes(factory_module, tmp_path, capsys):
    from PIL import Image

    from lst_fast.cli import main

    images, _ = colour_images(n_per_class=1, size=20)
    for k, name in enumerate(("src.png", "tgt.png")):
        Image.fromarray((images[k].permute(1, 2, 0) * 255).round().byte().numpy()).save(tmp_path / name)
    out = tmp_path / "run"
    code = main(
        [
            "run",
            "--model",
            f"py:{factory_module}:build(size=24)",
            "--source",
            str(tmp_path / "src.png"),
            "--target",
            str(tmp_path / "tgt.png"),
            "--iterations",
            "2",
            "--figures",
            "0",
            "--out",
            str(out),
            "--no-progress",
        ]
    )
    assert code == 0, capsys.readouterr().err
    summary = json.loads((out / "summary.json").read_text())
    assert summary["preprocessing"]["input_size"] == [3, 24, 24]
    assert summary["settings"]["mean"] == [0.5, 0.5, 0.5]  # lst_mean, applied inside traverse
    assert summary["pairs"][0]["label_name"] == "red" and summary["pairs"][0]["target_class_name"] == "green"


def test_the_paper_recipe_commands_parse():
    """Every command of the first recipe in docs/paper.md ("Reproduce the paper's comparison") is accepted by
    the parser as written."""
    import re
    import shlex

    from lst_fast.cli import build_parser

    section = (Path(__file__).resolve().parent.parent / "docs" / "paper.md").read_text()
    block = section.split("```bash", 1)[1].split("```", 1)[0].replace("\\\n", " ")
    paper = re.search(r'PAPER="([^"]*)"', block).group(1)
    commands = [
        line.replace("$PAPER", paper).replace("$IMAGENET", "/data/imagenet").replace("$CIFAR10", "/data/c")
        for line in block.splitlines()
        if line.startswith("lst-fast ")
    ]
    models = set()
    for command in commands:
        args = build_parser().parse_args(shlex.split(command)[1:])
        if args.command == "eval":
            models.add(args.model)
            assert (args.iterations, args.step_size, args.threshold, args.adv_step_size) == (400, 0.01, 0.2, 0.002)
            assert (args.num_samples, args.rounds, args.min_confidence) == (1000, 5, 0.6)
    assert models == {
        "timm:resnet50",
        "robustbench:Salman2020Do_R50",
        "timm:deit_small_patch16_224",
        "robustbench:Singh2023Revisiting_ViT-S-ConvStem",
        "robustbench:Standard:cifar10",
        "robustbench:Wu2020Adversarial_extra:cifar10:Linf",
    }
    assert sum(c.startswith("lst-fast compare") for c in commands) == 2
    from lst_fast.models.robustbench import parse_spec

    assert {parse_spec(m) for m in models if m.startswith("robustbench:")} == {
        ("Salman2020Do_R50", "imagenet", "Linf"),
        ("Singh2023Revisiting_ViT-S-ConvStem", "imagenet", "Linf"),
        ("Standard", "cifar10", "Linf"),
        ("Wu2020Adversarial_extra", "cifar10", "Linf"),
    }
