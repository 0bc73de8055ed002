"""Bad input to traverse gets a clear Python exception naming the argument; the model stays as it was."""

from __future__ import annotations

import copy

import pytest
import torch

import lst_fast
from conftest import tiny_cnn


@pytest.fixture
def setup():
    model = tiny_cnn(scale=12)
    g = torch.Generator().manual_seed(0)
    return model, torch.rand(3, 1, 8, 8, generator=g), torch.rand(3, 1, 8, 8, generator=g)


def test_labels_passed_as_targets_get_a_type_error(setup):
    model, x, _ = setup
    with pytest.raises(TypeError, match="y is the target images"):
        lst_fast.traverse(model, x, torch.tensor([1, 2, 3]))


@pytest.mark.parametrize(
    "change,error,match",
    [
        (lambda x, y: (x[0], y), ValueError, r"x must be source images of shape \(N, C, H, W\)"),
        (lambda x, y: (x.int(), y), TypeError, "x must be floating-point"),
        (lambda x, y: (x, y[:, :, :4]), ValueError, "y must have x's shape"),
        (lambda x, y: (x * 2, y), ValueError, "x has values in .* outside bounds"),
        (lambda x, y: (x, y.masked_fill(y > 0.9, float("nan"))), ValueError, "y contains NaN"),
        (lambda x, y: (x, y.to(torch.complex64)), TypeError, "y is the target images"),
        (lambda x, y: ([[0.0]], y), TypeError, "x must be a tensor"),
    ],
)
def test_bad_images(setup, change, error, match):
    model, x, y = setup
    xb, yb = change(x, y)
    with pytest.raises(error, match=match):
        lst_fast.traverse(model, xb, yb, iterations=1)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(step_size=0.0), "step_size must be a finite number > 0"),
        (dict(step_size=float("nan")), "step_size"),
        (dict(iterations=-1), "iterations must be an integer >= 0"),
        (dict(iterations=2.5), "iterations"),
        (dict(threshold=-0.1), "threshold must be"),
        (dict(adv_step_size=float("inf")), "adv_step_size"),
        (dict(init_noise=-1.0), "init_noise"),
        (dict(bounds=(1.0, 0.0)), "bounds must be finite with lo < hi"),
        (dict(bounds=(0.0,)), "bounds must be a pair"),
        (dict(mean=[0.1, 0.2], std=[1.0, 1.0]), "mean must have 1 or 1"),
        (dict(mean=0.5, std=0.0), "std must be > 0"),
        (dict(backend="fast"), "backend must be one of"),
        (dict(record_every=-2), "record_every"),
    ],
)
def test_bad_settings(setup, kwargs, match):
    model, x, y = setup
    with pytest.raises(ValueError, match=match):
        lst_fast.traverse(model, x, y, iterations=kwargs.pop("iterations", 1), **kwargs)


@pytest.mark.parametrize(
    "label,error,match",
    [
        (torch.tensor([0, 1, 7]), ValueError, r"label must hold class indices in \[0, 5\)"),
        (torch.tensor([0, 1]), ValueError, r"label must have shape \(3,\)"),
        (torch.tensor([0.0, 1.0, 2.0]), TypeError, "label must be an integer tensor"),
        (torch.tensor([0, -1, 2]), ValueError, "label must hold class indices"),
    ],
)
def test_bad_labels(setup, label, error, match):
    model, x, y = setup
    with pytest.raises(error, match=match):
        lst_fast.traverse(model, x, y, label=label, iterations=1)


@pytest.mark.parametrize("argument", ["x", "y", "label", "target_label"])
def test_meta_tensors_name_the_argument(setup, argument):
    """A meta tensor has a shape but no values: a ValueError names it (not torch's "no data" errors)."""
    model, x, y = setup
    kwargs = dict(x=x, y=y, label=torch.tensor([0, 1, 2]), target_label=torch.tensor([1, 2, 3]))
    kwargs[argument] = kwargs[argument].to("meta")
    with pytest.raises(ValueError, match=f"^{argument} is on the meta device"):
        lst_fast.traverse(model, **kwargs, iterations=1, record_every=1)


def test_bad_models_and_the_model_is_unchanged(setup):
    model, x, y = setup
    with pytest.raises(TypeError, match="model must be a torch.nn.Module"):
        lst_fast.traverse(lambda t: t, x, y)

    class WrongShape(torch.nn.Module):
        def forward(self, t):
            return t.flatten(1)[:1]

    with pytest.raises(ValueError, match=r"logits of shape \(3, num_classes\)"):
        lst_fast.traverse(WrongShape(), x, y, iterations=1)

    class NaNLogits(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.net = copy.deepcopy(model)

        def forward(self, t):
            return self.net(t) * float("nan")

    bad = NaNLogits().train()
    before = copy.deepcopy(bad.state_dict())
    with pytest.raises(ValueError, match="NaN or Inf logits"):
        lst_fast.traverse(bad, x, y, iterations=1)
    assert bad.training and bad.net.training  # restored although the call failed
    for k, v in bad.state_dict().items():
        assert torch.equal(v, before[k])


class _GeneratorReportingCuda(torch.Generator):
    """A CPU generator that reports the CUDA device: the check runs without a second device type."""

    @property
    def device(self):
        return torch.device("cuda", 0)


def test_generator_on_wrong_device(setup):
    model, x, y = setup  # on the CPU
    generators = [_GeneratorReportingCuda()]
    if torch.cuda.is_available():  # and a real one where there is a second device type
        generators.append(torch.Generator(device="cuda"))
    for generator in generators:
        with pytest.raises(ValueError, match="generator is on cuda"):
            lst_fast.traverse(model, x, y, init_noise=0.01, generator=generator)


def test_corrupt_result_file(tmp_path):
    path = tmp_path / "bad.safetensors"
    path.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json")
    with pytest.raises(ValueError, match="not a readable lst_fast result"):
        lst_fast.TraversalResult.load(path)
    with pytest.raises(FileNotFoundError):
        lst_fast.TraversalResult.load(tmp_path / "missing.safetensors")


def test_out_of_memory_suggests_a_batch_size(setup):
    model, x, y = setup

    class Hungry(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.net = model

        def forward(self, t):
            if torch.is_grad_enabled():
                raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
            return self.net(t)

    with pytest.raises(torch.OutOfMemoryError, match="batch_size=1 or smaller"):
        lst_fast.traverse(Hungry(), x, y, iterations=2, batch_size=x.shape[0])


def test_demo_reports_an_unwritable_output_folder(tmp_path):
    from lst_fast.commands.demo import run_demo

    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(ValueError, match="cannot write the demo's output folder"):
        run_demo("cnn", out=blocker / "sub", iterations=1, progress=False)


@pytest.mark.parametrize(
    "extra,message",
    [
        (["--rounds", "0"], "--rounds: expected an integer in [1, 100], got 0"),
        (["--data", "mnist"], "unknown data"),
        (["--model", "resnet"], "unknown model"),
        (["--data", "cifar10:/nonexistent"], "test_batch.bin not found"),
        (["--model", "fashion_cnn", "--checkpoint", "/nonexistent.safetensors"], "no checkpoint at"),
    ],
)
def test_eval_cli_reports_bad_arguments(tmp_path, capsys, extra, message):
    from lst_fast.cli import main

    args = [
        "eval",
        "--data",
        "fashion-mnist-sample",
        "--num-samples",
        "4",
        "--iterations",
        "1",
        "--out",
        str(tmp_path / "o"),
        "--no-progress",
    ]
    try:
        code = main(args + extra)
    except SystemExit as refused:  # a flag's range is checked when parsed, where argparse exits
        code = refused.code
    assert code == 1
    assert message in capsys.readouterr().err


def test_geometry_rejects_bad_shapes():
    from lst_fast.geometry import triangle_statistics, width_profile

    model = tiny_cnn(scale=12)
    x = torch.rand(2, 1, 8, 8)
    with pytest.raises(ValueError, match="direction of its shape"):
        width_profile(model, x, x[:1], torch.zeros(2, dtype=torch.long), [0.0, 1.0])
    with pytest.raises(ValueError, match="k must be an integer >= 2"):
        width_profile(model, x, x, torch.zeros(2, dtype=torch.long), [1.0], k=1)
    with pytest.raises(ValueError, match=r"need confidence \(T, P\) and weights \(P, 3\)"):
        triangle_statistics(torch.rand(2, 5), torch.rand(6, 3))


def test_settings_are_frozen_and_every_change_is_validated():
    import dataclasses

    from lst_fast import ops
    from lst_fast.walk import settings
    from lst_fast.walk.settings import LSTSettings

    assert (
        ops.check_backend is settings.check_backend
    )  # the ops refuse a backend with the settings' check (lst_fast.backends.names)
    lst = lst_fast.LevelSetTraversal(tiny_cnn(), step_size=0.1)
    with pytest.raises(dataclasses.FrozenInstanceError):
        lst.settings.step_size = -1.0
    with pytest.raises(AttributeError):
        lst.settings = LSTSettings()
    with pytest.raises(ValueError, match="step_size must be a finite number > 0"):
        lst.with_settings(step_size=-1.0)
    with pytest.raises(ValueError, match="iterations must be an integer"):
        lst.settings.replace(iterations=-2)
    with pytest.raises(TypeError, match="unknown LST setting"):
        lst_fast.LevelSetTraversal(tiny_cnn(), step=0.1)
    assert lst.with_settings(iterations=3).settings == LSTSettings(step_size=0.1, iterations=3)


def test_cli_flags_come_from_the_settings():
    import argparse

    from lst_fast.cli.arguments import add_settings_arguments, settings_from_arguments
    from lst_fast.walk.settings import EVALUATION_SETTINGS

    parser = argparse.ArgumentParser()
    add_settings_arguments(parser, ("step_size", "iterations", "precision", "graph"), EVALUATION_SETTINGS)
    assert "(default: 0.05)" in parser.format_help() and "eta:" in parser.format_help()
    args = parser.parse_args(["--iterations", "7", "--graph"])
    assert settings_from_arguments(args, EVALUATION_SETTINGS) == EVALUATION_SETTINGS.replace(iterations=7, graph=True)
    with pytest.raises(SystemExit):
        parser.parse_args(["--precision", "fp16"])
    with pytest.raises(SystemExit):  # refused when parsed (lst_fast.cli.arguments.positive_number)
        parser.parse_args(["--step-size", "-1"])
    with pytest.raises(ValueError, match="step_size"):  # and by the settings, when given past the parser
        settings_from_arguments(argparse.Namespace(step_size=-1.0))
