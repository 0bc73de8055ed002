"""The command line: run (the user's own image files), compare (finished evaluations side by side),
bench (speed on this machine), and what every subcommand shares: help with defaults, --version, exit
codes 0 / 1 / 130, one-line errors, the backend named on the first line."""

from __future__ import annotations

import argparse
import json
import re
import statistics
from pathlib import Path

import pytest
import torch

from lst_fast.cli import build_parser, main


def _subparsers(parser: argparse.ArgumentParser):
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return action.choices


def test_every_flag_has_help_that_shows_its_default():
    parser = build_parser()
    for name, sub in [("lst-fast", parser), *_subparsers(parser).items()]:
        formatter = sub._get_formatter()
        for action in sub._actions:
            if isinstance(action, (argparse._HelpAction, argparse._VersionAction, argparse._SubParsersAction)):
                continue
            assert action.help, f"{name} {action.option_strings or action.dest} has no help"
            if action.option_strings:
                shown = formatter._get_help_string(action)
                assert ("(required)" if action.required else "default") in shown, f"{name} {action.option_strings}"
    assert set(_subparsers(parser)) >= {"demo", "eval", "report", "info", "run", "compare", "bench"}
    assert "exit codes: 0 done, 1 error" in parser.format_help()


def test_the_model_and_data_help_lists_every_spec():
    subcommands = _subparsers(build_parser())
    for name in ("eval", "run", "bench"):
        text = " ".join(subcommands[name].format_help().split())
        for spec in ("cnn-robust", "timm:NAME", "torchvision:NAME", "robustbench:NAME", "py:MODULE:FUNCTION"):
            assert spec in text, (name, spec)
    text = " ".join(subcommands["eval"].format_help().split())
    for spec in ("fashion-mnist-sample", "cifar10:DIR", "imagefolder:DIR", "imagenet:ROOT", "tensor:FILE"):
        assert spec in text, spec


def test_every_subcommand_module_has_the_same_pair_of_functions():
    from lst_fast import cli

    assert set(cli.SUBCOMMANDS) == {"demo", "eval", "report", "info", "run", "compare", "leaderboard", "site", "bench"}
    for name, module in cli.SUBCOMMANDS.items():
        # each module is named after its subcommand; eval's is cli/evaluate.py (not the builtin's name)
        assert module.__name__ == f"lst_fast.cli.{ {'eval': 'evaluate'}.get(name, name) }"
        assert module.HELP and callable(module.add_arguments) and callable(module.command), name


def test_version_and_usage_errors(capsys):
    from lst_fast import __version__

    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0 and capsys.readouterr().out.strip() == f"lst-fast {__version__}"
    with pytest.raises(SystemExit) as exit_:
        main(["run", "--no-such-flag"])
    assert exit_.value.code == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "lst-fast run: error: the following arguments are required" in err


def test_run_flags_are_traverse_settings():
    """run's defaults are the settings dataclass's own, and its flags make an LSTSettings for traverse."""
    from lst_fast.cli.run import add_traverse_arguments, run_settings
    from lst_fast.walk.settings import LSTSettings

    parser = argparse.ArgumentParser()
    add_traverse_arguments(parser)
    args = parser.parse_args(["--iterations", "16"])
    settings = run_settings(args)
    assert isinstance(settings, LSTSettings) and args.seed == 0
    assert settings.record_every == 2 and settings.bounds == (0.0, 1.0) and settings.iterations == 16
    assert settings.mean is None and settings.std is None  # run_images then takes the model's own
    defaults = LSTSettings()
    for name in ("step_size", "threshold", "adv_step_size", "init_noise", "precision", "batch_size", "backend"):
        assert getattr(settings, name) == getattr(defaults, name), name
    explicit = run_settings(parser.parse_args(["--record-every", "0", "--mean", "0.5", "--std", "0.25"]))
    assert explicit.record_every == 0 and explicit.mean == (0.5,) and explicit.std == (0.25,)


def test_errors_are_one_line_with_exit_code_1(tmp_path, capsys):
    code = main(
        [
            "run",
            "--source",
            str(tmp_path / "missing.png"),
            "--target",
            str(tmp_path),
            "--out",
            str(tmp_path / "o"),
            "--no-progress",
        ]
    )
    captured = capsys.readouterr()
    assert code == 1
    assert captured.out.startswith("lst_fast ") and "on cpu" in captured.out.splitlines()[0]  # the backend
    assert captured.err.count("\n") == 1 and "no source file, folder or pattern" in captured.err
    assert "Traceback" not in captured.err
    with pytest.raises(FileNotFoundError):
        main(["run", "--debug", "--source", str(tmp_path / "missing.png"), "--target", str(tmp_path)])


def test_device_defaults_to_auto_which_picks_cuda_only_when_torch_sees_a_gpu(tmp_path, monkeypatch, capsys):
    parser = build_parser()
    for name, sub in _subparsers(parser).items():
        device = next((a for a in sub._actions if "--device" in a.option_strings), None)
        assert name in ("info", "compare") or device is not None, name  # the two that compute nothing
        assert device is None or device.default == "auto", name
    missing = ["run", "--source", str(tmp_path / "missing.png"), "--target", str(tmp_path), "--no-progress"]
    for seen, device, words in ((False, "cpu", "no GPU"), (True, "cuda", "a GPU")):
        monkeypatch.setattr(torch.cuda, "is_available", lambda seen=seen: seen)
        assert main(missing) == 1  # the missing file stops it after the first line
        first = capsys.readouterr().out.splitlines()[0]
        assert first.endswith(f" on {device} (--device auto: torch sees {words})"), first
    assert main(missing + ["--device", "cpu"]) == 1  # given explicitly: used as is, even with a GPU seen
    assert capsys.readouterr().out.splitlines()[0].endswith(" on cpu")


def test_a_device_without_data_is_refused_by_name(capsys):
    """--device meta used to reach torch.Generator(device="meta"): "META device type not an accelerator"."""
    from lst_fast.walk.validation import check_device

    assert check_device("cuda:1") == torch.device("cuda", 1)  # a name is checked, not the machine
    with pytest.raises(ValueError, match="generator is the meta device, which holds no values"):
        check_device(torch.device("meta"), "generator")
    for command, device, words in (("run", "meta", "the meta device"), ("demo", "gpu", "must be a device such as")):
        args = ["--source", "a.png", "--target", "b.png"] if command == "run" else []
        with pytest.raises(SystemExit) as exit_:  # a usage error, as argparse reports it
            main([command, *args, "--device", device])
        assert exit_.value.code == 1
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and f"lst-fast {command}: error: argument --device: the device" in err
        assert words in err


def test_interrupt_exits_130(monkeypatch, capsys):
    from lst_fast import cli

    def interrupted(args):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli.info, "command", interrupted)
    assert main(["info"]) == 130
    assert "interrupted" in capsys.readouterr().err


def test_a_bad_setting_is_an_error_of_the_input_exit_1(capsys):
    """lst_fast's own check (LSTSettings.validate raises the ValueError) is an expected error: one line. (Each
    number is range-checked when parsed; bounds in the wrong order pass the parser and meet the settings' check.)"""
    assert main(["run", "--source", "a.png", "--target", "b.png", "--bounds", "1", "0"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("lst-fast run: error: bounds must be") and "internal" not in err


@pytest.mark.parametrize("bug", [KeyError("backend"), RuntimeError("shape mismatch in a torch op"), TypeError("f()")])
def test_an_internal_error_exits_2_and_writes_its_traceback_to_a_file(bug, monkeypatch, capsys, tmp_path):
    from lst_fast import cli

    monkeypatch.setenv("TMPDIR", str(tmp_path))  # the traceback file goes to the temporary folder
    monkeypatch.setattr("tempfile.tempdir", None)

    def broken(args):  # raised here, not by a `raise` of lst_fast: not one of lst_fast's checks
        return {}["backend"] if isinstance(bug, KeyError) else (_ for _ in ()).throw(bug)

    monkeypatch.setattr(cli.info, "command", broken)
    assert main(["info"]) == cli.EXIT_BUG == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"lst-fast info: internal error: {type(bug).__name__}")
    assert "bug in lst_fast" in err
    path = Path(re.search(r"the traceback is in (\S+):", err).group(1))
    assert path.parent == tmp_path and path.name.startswith("lst-fast-error-")
    text = path.read_text()
    assert text.startswith("lst-fast info\n") and "Traceback (most recent call last)" in text
    assert "in broken" in text and text.rstrip().splitlines()[-1].startswith(type(bug).__name__)
    with pytest.raises(type(bug)):  # --debug: the traceback itself, on stderr
        main(["--debug", "info"])


def test_which_errors_are_expected():
    from lst_fast.cli.errors import is_expected
    from lst_fast.walk.settings import LSTSettings

    def caught(call):
        try:
            call()
        except Exception as error:  # noqa: BLE001
            return error
        raise AssertionError("no error")

    assert is_expected(caught(lambda: LSTSettings(step_size=-1)))  # raised by lst_fast's check
    assert is_expected(caught(lambda: open("/no/such/file")))  # an OSError, from anywhere
    assert is_expected(caught(lambda: __import__("no_such_package_for_lst_fast")))  # a missing package
    assert not is_expected(caught(lambda: torch.zeros(2) + torch.zeros(3)))  # a RuntimeError inside torch
    assert not is_expected(caught(lambda: int("x")))  # a ValueError raised here, not by lst_fast
    assert not is_expected(caught(lambda: [][1]))  # IndexError: never one of lst_fast's checks


def test_pairing():
    from lst_fast.commands.run_images import make_pairs

    assert make_pairs(2, 2, "in-order") == [(0, 0), (1, 1)]
    assert make_pairs(3, 1, "in-order") == [(0, 0), (1, 0), (2, 0)]
    assert make_pairs(2, 3, "all") == [(0, 0), (0, 1), (0, 2), (1, 0), (1, 1), (1, 2)]
    with pytest.raises(ValueError, match="cannot be paired in order"):
        make_pairs(2, 3, "in-order")


@pytest.fixture(scope="module")
def image_files(tmp_path_factory):
    """Sample Fashion-MNIST images as files: sources as grey PNGs, targets as larger RGB JPEGs."""
    from PIL import Image

    from lst_fast.data.fashion_mnist import load_sample

    root = tmp_path_factory.mktemp("images")
    images, labels = load_sample()
    (root / "src").mkdir()
    (root / "tgt").mkdir()
    for k, i in enumerate((0, 10)):  # a T-shirt and a trouser
        Image.fromarray(images[i, 0].numpy()).save(root / "src" / f"s{k}.png")
    for k, i in enumerate((50, 70, 90)):  # a sandal, a sneaker, an ankle boot
        Image.fromarray(images[i, 0].numpy()).convert("RGB").resize((56, 56)).save(root / "tgt" / f"t{k}.jpg")
    return root


def test_run_on_image_files_with_a_shipped_model(image_files, tmp_path, capsys):
    from PIL import Image

    from lst_fast import TraversalResult

    out = tmp_path / "run"
    code = main(
        [
            "run",
            "--model",
            "cnn",
            "--source",
            str(image_files / "src" / "*.png"),
            "--target",
            str(image_files / "tgt"),
            "--pairing",
            "all",
            "--iterations",
            "8",
            "--step-size",
            "0.05",
            "--source-label",
            "0",
            "1",
            "--figures",
            "2",
            "--out",
            str(out),
            "--no-progress",
        ]
    )
    stdout = capsys.readouterr().out
    assert code == 0
    assert re.match(r"lst_fast \S+, torch \S+: (compiled kernels|pure-PyTorch fallback.*) on cpu", stdout)
    summary = json.loads((out / "summary.json").read_text())
    pairs = summary["pairs"]
    assert len(pairs) == 6 and [p["label"] for p in pairs] == [0, 0, 0, 1, 1, 1]
    assert summary["preprocessing"]["input_size"] == [1, 28, 28]
    for p in pairs:
        image = Image.open(out / p["output"])
        assert image.size == (28, 28) and image.mode == "L"
        assert p["rms_to_target"] < p["rms_to_target_start"]
        assert 0 <= p["accepted_steps"] <= 8
    result = TraversalResult.load(out / "result.safetensors")
    assert torch.allclose(
        result.confidence.double(), torch.tensor([p["confidence"] for p in pairs], dtype=torch.float64)
    )
    assert result.config["iterations"] == 8 and result.config["step_size"] == 0.05
    assert sorted(f.name for f in (out / "paths").iterdir()) == ["000.png", "001.png"]
    assert (out / "linear_path.png").stat().st_size > 0
    text = (out / "summary.md").read_text()
    assert "T-shirt/top" in text and "paths/000.png" in text and "linear_path.png" in text


def test_run_with_a_timm_model_uses_its_preprocessing(image_files, tmp_path):
    from PIL import Image

    from lst_fast.commands.run_images import RunOptions, run_images
    from lst_fast.run_environment import QUIET_ENVIRONMENT

    options = RunOptions(
        model_spec="timm:resnet18",
        sources=[str(image_files / "src" / "s0.png")],
        targets=[str(image_files / "tgt" / "t1.jpg")],
        out=tmp_path / "timm",
        pretrained=False,
        input_size=32,
        figures=1,
    )
    numbers = run_images(options, QUIET_ENVIRONMENT, iterations=2)
    pre = numbers["preprocessing"]
    assert pre["input_size"] == [3, 32, 32] and pre["interpolation"] == "bicubic"
    assert numbers["settings"]["mean"] == [0.485, 0.456, 0.406]  # timm's config, applied inside traverse
    image = Image.open(tmp_path / "timm" / numbers["pairs"][0]["output"])
    assert image.size == (32, 32) and image.mode == "RGB"


@pytest.fixture(scope="module")
def evaluations(tmp_path_factory):
    from lst_fast.evaluation import EvalConfig, run_evaluation
    from lst_fast.run_environment import QUIET_ENVIRONMENT

    root = tmp_path_factory.mktemp("evals")
    # triangle_n=4 (15 points a triangle, not 66): Table 2 is still made of triangle fractions to format
    small = dict(data="fashion-mnist-sample", num_samples=6, rounds=2, iterations=2, chunk_size=4, triangle_n=4)
    run_evaluation(EvalConfig(**small), root / "cnn", env=QUIET_ENVIRONMENT)
    run_evaluation(EvalConfig(**small, model="cnn-robust", threshold=0.1), root / "robust", env=QUIET_ENVIRONMENT)
    return root


def test_compare_tables_match_the_evaluations(evaluations, tmp_path, capsys):
    from lst_fast.evaluation.tables import TABLE1_HEADERS, TABLE2_HEADERS

    out = tmp_path / "cmp"
    assert main(["compare", str(evaluations / "cnn"), str(evaluations / "robust"), "--out", str(out)]) == 0
    assert "## Table 1" in capsys.readouterr().out
    for key, headers in (("table1", TABLE1_HEADERS), ("table2", TABLE2_HEADERS)):
        lines = (out / f"{key}.md").read_text().splitlines()
        rows = [line for line in lines if line.startswith("| `")]
        assert len(rows) == 2
        for row, run in zip(rows, ("cnn", "robust"), strict=True):
            tables = json.loads((evaluations / run / "tables.json").read_text())
            cells = [c.strip() for c in row.strip("|").split("|")]
            assert cells[0] == ("`cnn`" if run == "cnn" else "`cnn-robust`")
            for cell, name in zip(cells[1 : len(headers) + 1], headers, strict=True):
                m, s = tables[key][name]
                assert cell == f"{m:.3f} ± {s:.3f}", (key, name)
            assert cells[len(headers) + 1] == str(tables["pairs"]) and cells[len(headers) + 2] == str(tables["sources"])
            assert "**delta=" in cells[-1] and "eta=0.05" in cells[-1]  # the differing threshold is flagged
        assert "settings differ between the runs: threshold" in "\n".join(lines)
        tex = (out / f"{key}.tex").read_text()
        assert r"\begin{tabular}" in tex and r"\texttt{cnn-robust}" in tex and "$^\\dagger$" in tex
    for name in ("table1_distributions.png", "table2_fractions.png", "compare.md", "compare.json"):
        assert (out / name).stat().st_size > 0


def test_compare_refuses_unfinished_folders_by_name(evaluations, tmp_path, capsys):
    unfinished = tmp_path / "half"
    unfinished.mkdir()
    (unfinished / "config.json").write_text((evaluations / "cnn" / "config.json").read_text())
    code = main(
        ["compare", str(evaluations / "cnn"), str(unfinished), str(tmp_path / "none"), "--out", str(tmp_path / "cmp")]
    )
    err = capsys.readouterr().err
    assert code == 1 and f"{unfinished} is unfinished" in err and f"{tmp_path / 'none'} does not exist" in err
    assert not (tmp_path / "cmp").exists()


def test_bench_runs_once_at_tiny_sizes(tmp_path, capsys):
    from lst_fast.commands.bench import default_modes

    assert "lst-bf16-graph" not in default_modes("cpu") and "lst-bf16-graph" in default_modes("cuda")
    out = tmp_path / "speed"
    code = main(
        [
            "bench",
            "--model",
            "cnn",
            "--batch-size",
            "4",
            "--iterations",
            "2",
            "--repeats",
            "2",
            "--modes",
            "paper",
            "one-pass",
            "lst-fp32",
            "lst-bf16",
            "--out",
            str(out),
        ]
    )
    stdout = capsys.readouterr().out
    assert code == 0 and stdout.startswith("lst_fast ")
    rows = json.loads(out.with_suffix(".json").read_text())
    assert [r["mode"] for r in rows] == ["paper", "one-pass", "lst-fp32", "lst-bf16"]
    assert all(len(r["seconds"]) == 2 and len(r["seconds_3x"]) == 2 for r in rows)
    for r in rows:  # the steady rate and set-up come from the runs themselves (null only if 3k was not longer)
        assert r["setup_s"] is None or r["setup_s"] >= 0
        assert r["per_call_img_iter_per_s"] == pytest.approx(4 * 2 / statistics.median(r["seconds"]))
    assert "| lst_fast bf16 |" in stdout and "set-up s" in stdout
    assert "vs paper loop" in out.with_suffix(".md").read_text()
    assert main(["bench", "--modes", "lst-bf16-graph"]) == 1  # graphs need CUDA
    assert "needs a CUDA device" in capsys.readouterr().err


def test_steady_rate_and_setup_split_a_call():
    from lst_fast.commands.bench import setup_seconds, steady_rate

    # 2 s of set-up, then 0.01 s per iteration for a batch of 8: k=10 takes 2.1 s, 3k=30 takes 2.3 s.
    assert steady_rate(8, 10, 2.1, 2.3) == pytest.approx(8 / 0.01)
    assert setup_seconds(8, 10, 2.1, 2.3) == pytest.approx(2.0)
    assert steady_rate(8, 10, 2.1, 2.1) != steady_rate(8, 10, 2.1, 2.1)  # no growth seen: NaN, not infinity


def test_fp32_baselines_run_without_tf32(monkeypatch):
    from lst_fast.commands import bench
    from lst_fast.walk import runtime

    seen = []

    def spy(model, x, y, iterations):
        seen.append([getattr(owner, name) == full for owner, name, full in runtime._tf32_switches(torch.backends)])

    import lst_fast.commands.baselines as baselines

    monkeypatch.setattr(baselines, "paper_loop", spy)
    monkeypatch.setattr(baselines, "one_pass_loop", spy)
    for mode in ("paper", "one-pass"):
        bench.mode_runner(mode, None, "cpu")(None, None, None, 1)
    assert len(seen) == 2 and all(all(flags) for flags in seen), seen


def test_each_baseline_runs_under_the_cudnn_setting_of_its_lst_mode(monkeypatch):
    """The expert loop autotunes cuDNN as lst-bf16 does, and the fp32 baselines leave it as lst-fp32 does,
    so a ratio does not measure autotuning. The flag is read in the model's gradient forwards; torch.compile is
    replaced by the identity (what is compiled does not matter here)."""
    from torch import nn

    from lst_fast.commands import bench

    seen = []

    class Spy(nn.Module):
        def __init__(self):
            super().__init__()
            self.linear = nn.Linear(12, 3)

        def forward(self, x):
            if torch.is_grad_enabled():  # the walk's forwards (lst-bf16's end check turns autotuning off)
                seen.append(torch.backends.cudnn.benchmark)
            return self.linear(x.flatten(1))

    monkeypatch.setattr(torch, "compile", lambda fn, **kwargs: fn)
    monkeypatch.setattr(torch.backends.cudnn, "benchmark", False)
    x, y = torch.rand(2, 3, 2, 2), torch.rand(2, 3, 2, 2)
    flags = {}
    for mode in ("paper", "one-pass", "lst-fp32", "expert-compile", "lst-bf16"):
        seen.clear()
        model = Spy()
        bench.mode_runner(mode, model, "cpu")(model, x, y, 2)
        assert seen and len(set(seen)) == 1, (mode, seen)
        flags[mode] = seen[0]
    assert flags["expert-compile"] == flags["lst-bf16"] is True
    assert flags["paper"] == flags["one-pass"] == flags["lst-fp32"] is False
    assert torch.backends.cudnn.benchmark is False  # restored
