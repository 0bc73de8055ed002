"""Exit codes that tell whose fault an error is: a model that does not fit its data, and an error raised in
the user's own model code, are errors of the input (exit code 1, one line naming the model); an error in
lst_fast's own code, even one the user's forward calls, stays a bug (exit code 2)."""

from __future__ import annotations

import re
import textwrap
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from conftest import cli_exit_code

DATA = "fashion-mnist-sample"

MODELS = """
import torch
from torch import nn


class Linear(nn.Module):
    def __init__(self, classes=10, output="logits"):
        super().__init__()
        self.lin = nn.Linear(28 * 28, classes)
        self.output = output
        self.lst_input_size = (1, 28, 28)

    def forward(self, x):
        y = self.lin(x.flatten(1))
        if self.output == "flat":
            return y.sum(1)
        if self.output == "tuple":
            return y, y
        if self.output == "raises":
            raise ValueError("my forward broke")
        if self.output == "lst_fast":  # calls lst_fast wrongly: lst_fast's code raises
            from lst_fast.backends.confidence import class_probability

            return class_probability(y, None)
        return y


def build(classes=10, output="logits"):
    return Linear(classes, output)


def broken_factory():
    return {}["weights"]


def torch_layer_misused():
    model = Linear()
    model.lin = nn.Linear(3, 10)  # the forward's torch call raises inside torch
    return model
"""


@pytest.fixture
def models_file(tmp_path):
    path = tmp_path / "user_models.py"
    path.write_text(textwrap.dedent(MODELS))
    return path


def _eval(tmp_path, model: str, data: str = DATA) -> list:
    return [
        "eval",
        "--model",
        model,
        "--data",
        data,
        "--num-samples",
        "4",
        "--rounds",
        "2",
        "--iterations",
        "2",
        "--no-progress",
        "--out",
        str(tmp_path / "out"),
    ]


def _one_line(capsys, code: int, wanted: int = 1) -> str:
    err = capsys.readouterr().err
    assert code == wanted, err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    return err


@pytest.mark.parametrize(
    "call,words",
    [
        ("build(classes=5)", ["has 5 classes", "labels in [0, 9]"]),
        ("build(output='flat')", ["returns outputs of shape (100,)", "expected logits of shape (100, classes)"]),
        ("build(output='tuple')", ["returns a tuple", "not one tensor of logits"]),
    ],
)
def test_a_model_that_does_not_fit_the_data_is_exit_1_naming_both(models_file, tmp_path, capsys, call, words):
    spec = f"py:{models_file}:{call}"
    err = _one_line(capsys, cli_exit_code(_eval(tmp_path, spec)))
    assert f"the model {spec}" in err and DATA in err and "internal error" not in err
    assert all(w in err for w in words), err
    assert not (tmp_path / "out" / "results").exists()  # refused on the pool scan's first batch


def test_labels_beyond_the_models_classes_are_exit_1(tmp_path, capsys):
    images = torch.rand(12, 1, 28, 28)
    labels = torch.arange(12)  # labels 10 and 11: beyond the shipped CNN's 10 classes
    save_file({"images": images, "labels": labels}, str(tmp_path / "twelve.safetensors"))
    err = _one_line(capsys, cli_exit_code(_eval(tmp_path, "cnn", f"tensor:{tmp_path / 'twelve.safetensors'}")))
    assert "the model cnn has 10 classes" in err and "labels in [0, 11]" in err and "twelve.safetensors" in err


def _traceback_file(err: str, tmp_path: Path) -> str:
    path = Path(re.search(r"the traceback is in (\S+?)\)?$", err.strip()).group(1).rstrip(")"))
    assert path.parent == tmp_path / "tmp", path
    return path.read_text()


@pytest.mark.parametrize(
    "call,raised,where",
    [
        ("build(output='raises')", "ValueError: my forward broke", "in forward"),
        ("broken_factory", "KeyError: 'weights'", "in broken_factory"),
        ("torch_layer_misused", "RuntimeError: mat1 and mat2 shapes cannot be multiplied", "in forward"),
    ],
)
def test_an_error_in_the_users_own_code_is_exit_1_with_its_traceback_in_a_file(
    models_file, tmp_path, capsys, monkeypatch, call, raised, where
):
    (tmp_path / "tmp").mkdir()
    monkeypatch.setenv("TMPDIR", str(tmp_path / "tmp"))  # the traceback file goes to the temporary folder
    monkeypatch.setattr("tempfile.tempdir", None)
    spec = f"py:{models_file}:{call}"
    err = _one_line(capsys, cli_exit_code(_eval(tmp_path, spec)))
    assert err.startswith(f"lst-fast eval: error: the model {spec} raised {raised}"), err
    assert "user_models.py, line" in err and where in err and "bug in lst_fast" not in err
    text = _traceback_file(err, tmp_path)
    assert "Traceback (most recent call last)" in text and str(models_file) in text


def test_an_error_in_lst_fasts_code_called_by_the_users_forward_stays_a_bug(models_file, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    monkeypatch.setattr("tempfile.tempdir", None)
    err = _one_line(capsys, cli_exit_code(_eval(tmp_path, f"py:{models_file}:build(output='lst_fast')")), wanted=2)
    assert "internal error: AttributeError" in err and "bug in lst_fast" in err


def test_a_factory_module_by_name_and_its_syntax_errors_are_the_users(tmp_path, capsys, monkeypatch):
    """By module name (imported from the current folder): its top-level package is the user's code; a
    syntax error, which runs no frame of the user's, is named by file and line."""
    from lst_fast.models.user_code import blame

    package = tmp_path / "my_package"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "nets.py").write_text(textwrap.dedent(MODELS))
    (tmp_path / "typo.py").write_text("def build(:\n    pass\n")
    monkeypatch.chdir(tmp_path)
    err = _one_line(capsys, cli_exit_code(_eval(tmp_path, "py:my_package.nets:build(output='raises')")))
    assert "the model py:my_package.nets:build(output='raises') raised ValueError" in err and "nets.py, line" in err
    err = _one_line(capsys, cli_exit_code(_eval(tmp_path, "py:typo:build")))
    assert "py:typo:build: " in err and "typo.py, line 1" in err
    try:
        torch.zeros(2) + torch.zeros(3)
    except RuntimeError as error:  # raised by torch called from here (no user frame): not the user's
        assert blame(error) is None
