"""The embedded default: Fashion-MNIST data, the shipped models, the training script and the demo."""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from lst_fast.data.fashion_mnist import CLASSES, DEBIAN_DIR, FILES, load_fashion_mnist, load_sample, parse_idx
from lst_fast.models import SHIPPED, load_checkpoint, load_model, model_info, shipped_path
from lst_fast.models.train_fashion import accuracy

ROOT = Path(__file__).resolve().parents[1]
HAVE_DATA = all((DEBIAN_DIR / f).is_file() for f in FILES["test"] + FILES["train"])
needs_data = pytest.mark.skipif(not HAVE_DATA, reason="apt-get install dataset-fashion-mnist")


def test_shipped_sample():
    images, labels = load_sample()
    assert images.shape == (100, 1, 28, 28) and images.dtype == torch.uint8
    assert torch.equal(torch.bincount(labels, minlength=10), torch.full((10,), 10))
    assert len(CLASSES) == 10


def test_idx_parser_rejects_bad_files():
    with pytest.raises(ValueError, match="bad magic"):
        parse_idx(b"\x00\x00\x09\x01\x00\x00\x00\x01\x05")
    with pytest.raises(ValueError, match="truncated or corrupt"):
        parse_idx(b"\x00\x00\x08\x01\x00\x00\x00\x05\x01\x02")
    assert parse_idx(b"\x00\x00\x08\x02\x00\x00\x00\x01\x00\x00\x00\x02\x07\x09").tolist() == [[7, 9]]


def test_missing_and_corrupt_data_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="apt-get install dataset-fashion-mnist"):
        load_fashion_mnist("test", root=tmp_path)
    for name in FILES["test"]:
        (tmp_path / name).write_bytes(b"not gzip at all")
    with pytest.raises(ValueError, match="not a readable gzip file"):
        load_fashion_mnist("test", root=tmp_path)
    for name in FILES["test"]:
        with gzip.open(tmp_path / name, "wb") as f:
            f.write(b"\x00\x00\x08\x03\x00\x00\x00\x02\x00\x00\x00\x1c\x00\x00\x00\x1c" + b"\x00" * 100)
    with pytest.raises(ValueError, match="truncated or corrupt"):
        load_fashion_mnist("test", root=tmp_path)
    with pytest.raises(ValueError, match="split must be"):
        load_fashion_mnist("val")


@needs_data
def test_debian_files_load():
    images, labels = load_fashion_mnist("test")
    assert images.shape == (10000, 1, 28, 28) and labels.shape == (10000,)
    sample, sample_labels = load_sample()
    assert torch.equal(sample[:1], images[labels == 0][:1])  # the sample comes from the test split


@pytest.mark.parametrize("name", sorted(SHIPPED))
def test_shipped_models_reach_their_documented_accuracy(name):
    info = model_info(name)
    model = load_model(name)
    assert not model.training
    images, labels = load_sample()
    assert accuracy(model, images, labels) == pytest.approx(info["sample_accuracy"], abs=0.011)
    if HAVE_DATA:
        test_images, test_labels = load_fashion_mnist("test")
        assert accuracy(model, test_images, test_labels) == pytest.approx(info["test_accuracy"], abs=0.002)
    assert info["command"].startswith("python -m lst_fast.models.train_fashion")


def test_robust_model_is_more_robust_than_the_normal_one():
    from lst_fast.models.train_fashion import robust_accuracy

    images, labels = load_sample()
    g = torch.Generator().manual_seed(0)
    normal = robust_accuracy(load_model("cnn"), images, labels, 0.1, 10, g)
    robust = robust_accuracy(load_model("cnn-robust"), images, labels, 0.1, 10, g)
    assert robust > normal + 0.3


def test_truncated_checkpoint_is_a_clear_error(tmp_path):
    data = shipped_path("cnn").read_bytes()
    bad = tmp_path / "cut.safetensors"
    bad.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="truncated or corrupt"):
        load_checkpoint("fashion_cnn", bad)
    with pytest.raises(ValueError, match="unknown model"):
        load_model("resnet")


@needs_data
@pytest.mark.parametrize("model", ["cnn", "cnn-robust", "vit"])
def test_training_script_smoke_run(tmp_path, model):
    from lst_fast.models.train_fashion import main

    out = tmp_path / f"{model}.safetensors"
    main(["--model", model, "--epochs", "1", "--limit", "256", "--adv-steps", "2", "--out", str(out)])
    info_model = load_checkpoint("fashion_vit" if model == "vit" else "fashion_cnn", out)
    assert isinstance(info_model, torch.nn.Module)


def test_cli_demo_writes_figures_and_summary_and_info(tmp_path, capsys):
    """The demo as its own process (`python -m lst_fast`, exit code 0) and every file it writes (one demo run
    serves both: a second, in this process, cost as much again); `info` and a bad argument through the
    same main() in this process (what the process adds, the entry point and its exit code, is covered by
    the demo)."""
    from lst_fast.cli import main

    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "lst_fast",
            "demo",
            "--model",
            "cnn",  # the ViT (timm's import, a slower walk) adds about 2 s to this process
            "--iterations",
            "5",
            "--out",
            str(tmp_path / "d"),
            "--no-progress",
        ],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=ROOT,
    )
    assert out.returncode == 0, out.stderr
    assert "mean RMS to target" in out.stdout
    demo = tmp_path / "d"
    for name in (
        "grid.png",
        "path.png",
        "linear_path.png",
        "triangles.png",
        "summary.md",
        "summary.json",
        "result.safetensors",
    ):
        assert (demo / name).stat().st_size > 0, name
    numbers = json.loads((demo / "summary.json").read_text())
    assert numbers["model"] == "cnn" and numbers["pairs"] == 90
    assert numbers["mean_rms_to_target"] < numbers["mean_rms_to_target_start"]
    assert 0 < numbers["acceptance_rate"] <= 1
    assert "mean RMS to target" in (demo / "summary.md").read_text()
    capsys.readouterr()
    assert main(["info"]) == 0 and '"cpu"' in capsys.readouterr().out
    with pytest.raises(SystemExit) as refused:  # refused when parsed, as argparse refuses
        main(["demo", "--iterations", "-3", "--out", str(tmp_path / "e")])
    assert refused.value.code == 1
    assert "--iterations: expected an integer >= 0" in capsys.readouterr().err
    assert not (tmp_path / "e").exists()


def test_idx_header_sizes_that_overflow_int64_are_refused():
    # 65536**4 = 2**64: wrapped to 0 in int64, it matched an empty body and failed later without the name
    header = b"\x00\x00\x08\x04" + (65536).to_bytes(4, "big") * 4
    with pytest.raises(ValueError, match=r"f\.gz holds 20 bytes but its header .* needs 18446744073709551636"):
        parse_idx(header, "f.gz")
    header = b"\x00\x00\x08\x03" + (2**32 - 1).to_bytes(4, "big") * 3
    with pytest.raises(ValueError, match="truncated or corrupt"):
        parse_idx(header + b"\x00" * 7, "g.gz")


def test_missing_data_message_names_only_flags_that_exist(tmp_path, capsys):
    import re

    from lst_fast.cli import main

    with pytest.raises(FileNotFoundError) as error:
        load_fashion_mnist("test", root=tmp_path)
    message = str(error.value)
    flags = set(re.findall(r"--[a-z][a-z-]*", message))
    assert "--download" not in flags and "--data-root" in flags
    with pytest.raises(SystemExit):
        main(["eval", "--help"])
    help_text = capsys.readouterr().out
    for flag in flags:
        assert re.search(rf"{flag}\b", help_text), f"the message suggests {flag}, which `lst-fast eval` lacks"
    assert "download_if_missing=True" in message and "fashion-mnist-sample" in message
