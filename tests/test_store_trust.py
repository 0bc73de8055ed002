"""An evaluation folder is trusted only as far as it can be checked: resume vets every chunk and triangle
file, a failed run writes nothing, a folder is written by one run at a time, and a failed write or a
malformed file gives one clear error naming the file."""

from __future__ import annotations

import errno
import json
import os
import shutil
from pathlib import Path

import pytest

from lst_fast.evaluation import EvalConfig, EvaluationStore, run_evaluation
from lst_fast.run_environment import QUIET_ENVIRONMENT

TINY = dict(data="fashion-mnist-sample", num_samples=8, rounds=2, iterations=2, chunk_size=4, triangle_n=2)


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A finished TINY evaluation (do not modify; copy it)."""
    out = tmp_path_factory.mktemp("finished")
    run_evaluation(EvalConfig(**TINY), out, env=QUIET_ENVIRONMENT)
    return out


# A small evaluation (4 sources, 2 rounds, 2 iterations, chunks of 2: two chunk files a round, as the hooks
# below name them; a 6-point triangle grid: no test here reads a triangle value, only its file's bytes).
SMALL_EVAL_ARGS = [
    "eval",
    "--data",
    "fashion-mnist-sample",
    "--num-samples",
    "4",
    "--rounds",
    "2",
    "--iterations",
    "2",
    "--chunk-size",
    "2",
    "--triangle-n",
    "2",
    "--no-progress",
]
# the same evaluation through the API (a resume with other settings would be refused)
SMALL_EVAL = EvalConfig(data="fashion-mnist-sample", num_samples=4, rounds=2, iterations=2, chunk_size=2, triangle_n=2)


def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def _files(folder: Path) -> dict:
    """Every result file's bytes; not the lock, nor walk_cost*.json, which records how long each chunk's
    walk took (a timing, different in every run; the leaderboard's cost table reads it)."""
    return {
        p.relative_to(folder).as_posix(): p.read_bytes()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.name != ".lst-fast.lock" and not p.name.startswith("walk_cost")
    }


# -- resume vets every file -------------------------------------------------------------------------------


def test_chunks_of_another_configuration_are_refused_without_config_json(finished, tmp_path):
    out = _copy(finished, tmp_path / "copy")
    (out / "config.json").unlink()
    with pytest.raises(ValueError, match=r"round00_chunk00000\.safetensors does not belong.*iterations"):
        run_evaluation(EvalConfig(**{**TINY, "iterations": 1}), out, env=QUIET_ENVIRONMENT)


def test_a_chunk_of_a_larger_run_is_refused_in_a_smaller_folder(finished, tmp_path):
    small = dict(TINY, num_samples=4)
    run_evaluation(EvalConfig(**small), tmp_path / "small", env=QUIET_ENVIRONMENT)
    shutil.copy(
        finished / "results" / "round00_chunk00000.safetensors",
        tmp_path / "small" / "results" / "round00_chunk00000.safetensors",
    )
    with pytest.raises(ValueError, match=r"round00_chunk00000\.safetensors does not belong.*num_samples"):
        run_evaluation(EvalConfig(**small), tmp_path / "small", env=QUIET_ENVIRONMENT)


def test_a_chunk_under_another_name_or_with_other_rows_is_refused(finished, tmp_path):
    import torch
    from safetensors.torch import load_file, save_file

    out = _copy(finished, tmp_path / "copy")
    results = out / "results"
    shutil.copy(results / "round00_chunk00000.safetensors", results / "round00_chunk00001.safetensors")
    with pytest.raises(ValueError, match=r"round00_chunk00001\.safetensors does not belong.*chunk 0, expected 1"):
        run_evaluation(EvalConfig(**TINY), out, env=QUIET_ENVIRONMENT)
    # the right record, but one row short and another source: caught by the shape and index checks
    shutil.copy(finished / "results" / "round00_chunk00001.safetensors", results / "round00_chunk00001.safetensors")
    path = results / "round01_chunk00000.safetensors"
    from safetensors import safe_open

    with safe_open(str(path), "pt") as f:
        metadata = f.metadata()
    tensors = load_file(str(path))
    save_file({k: v[1:].contiguous() for k, v in tensors.items()}, str(path), metadata=metadata)
    with pytest.raises(ValueError, match=r"round01_chunk00000\.safetensors does not belong.*source or target"):
        run_evaluation(EvalConfig(**TINY), out, env=QUIET_ENVIRONMENT)
    tensors["images"] = torch.zeros(len(tensors["source"]), 1, 2, 2)
    save_file(tensors, str(path), metadata=metadata)
    with pytest.raises(ValueError, match=r"round01_chunk00000\.safetensors does not belong.*images have shape"):
        run_evaluation(EvalConfig(**TINY), out, env=QUIET_ENVIRONMENT)


def test_a_triangle_file_of_another_configuration_is_refused(finished, tmp_path):
    other = dict(TINY, triangle_n=3)
    run_evaluation(EvalConfig(**other), tmp_path / "other", env=QUIET_ENVIRONMENT)
    out = _copy(finished, tmp_path / "copy")
    shutil.copy(
        tmp_path / "other" / "results" / "triangles_r00_r01.safetensors",
        out / "results" / "triangles_r00_r01.safetensors",
    )
    with pytest.raises(ValueError, match=r"triangles_r00_r01\.safetensors does not belong.*triangle_n"):
        run_evaluation(EvalConfig(**TINY), out, env=QUIET_ENVIRONMENT)


def test_a_truncated_chunk_is_recomputed_with_a_warning_naming_it(finished, tmp_path):
    out = _copy(finished, tmp_path / "copy")
    path = out / "results" / "round01_chunk00001.safetensors"
    path.write_bytes(path.read_bytes()[:-100])
    (out / "results" / "triangles_r00_r01.safetensors").write_bytes(b"")
    with pytest.warns(RuntimeWarning, match=r"round01_chunk00001\.safetensors: it cannot be read"):
        run_evaluation(EvalConfig(**TINY), out, env=QUIET_ENVIRONMENT)
    assert _files(out) == _files(finished)


def test_reading_a_corrupt_chunk_names_the_file(finished, tmp_path):
    out = _copy(finished, tmp_path / "copy")
    (out / "results" / "round00_chunk00001.safetensors").write_bytes(b"not safetensors")
    with pytest.raises(ValueError, match=r"cannot read .*round00_chunk00001\.safetensors"):
        EvaluationStore(out).read_round(0, 2)


# -- nothing is written before everything is checked ----------------------------------------------------


@pytest.mark.parametrize(
    "change, error",
    [
        (dict(model="no-such-model"), (ValueError, RuntimeError)),
        (dict(data="tensor:/no/such/file.safetensors"), (ValueError, FileNotFoundError)),
        (dict(num_samples=1), ValueError),
    ],
)
def test_a_failed_evaluation_writes_nothing(tmp_path, change, error):
    out = tmp_path / "out"
    with pytest.raises(error):
        run_evaluation(EvalConfig(**{**TINY, **change}), out, env=QUIET_ENVIRONMENT)
    assert not out.exists()


def test_the_corrected_command_runs_after_a_failed_one(tmp_path):
    from lst_fast.cli import main

    base = [
        "eval",
        "--data",
        "fashion-mnist-sample",
        "--num-samples",
        "4",
        "--rounds",
        "1",
        "--iterations",
        "1",
        "--chunk-size",
        "4",
        "--no-progress",
        "--out",
        str(tmp_path / "out"),
    ]
    assert main(base + ["--model", "no-such-model"]) == 1
    for flag in ("--step-size", "--min-confidence"):
        with pytest.raises(SystemExit) as refused:  # refused when parsed, as argparse refuses
            main(base + [flag, "nan"])
        assert refused.value.code == 1
    assert not (tmp_path / "out").exists()
    assert main(base) == 0
    assert json.loads((tmp_path / "out" / "config.json").read_text())["num_samples"] == 4


@pytest.mark.parametrize("value", [float("nan"), -0.1, 1.0, "0.5", True])
def test_min_confidence_must_be_a_probability(value):
    with pytest.raises(ValueError, match="min_confidence"):
        EvalConfig(min_confidence=value)


@pytest.mark.parametrize(
    "name, value", [("seed", 1.5), ("model", 3), ("data", ""), ("checkpoint", 1), ("pretrained", "no")]
)
def test_bad_evaluation_settings_name_the_setting(name, value):
    with pytest.raises(ValueError, match=name):
        EvalConfig(**{name: value})


# -- malformed files and failed writes ------------------------------------------------------------------


@pytest.mark.parametrize(
    "text", ['{"rounds": "x"}', '{"iterations": [1]}', '{"model": null}', "[1, 2]", '{"lst": 3}', "\xff\xfe"]
)
def test_a_malformed_config_json_is_named(tmp_path, text):
    (tmp_path / "config.json").write_text(text, encoding="latin-1")
    store = EvaluationStore(tmp_path)
    with pytest.raises(ValueError, match="config.json"):
        store.read_config()
    with pytest.raises(ValueError, match="config.json|another configuration"):
        store.check_or_write_config(EvalConfig())


def _disk_full_after(monkeypatch, module, name, calls):
    """Make module.name raise ENOSPC from its `calls`-th call on (earlier calls go through)."""
    real = getattr(module, name)
    count = [0]

    def writer(*args, **kwargs):
        count[0] += 1
        if count[0] >= calls:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(*args, **kwargs)

    monkeypatch.setattr(module, name, writer)


def test_disk_full_during_eval_is_one_clear_error_and_keeps_finished_chunks(finished, tmp_path, monkeypatch, capsys):
    import safetensors.torch

    from lst_fast.cli import main

    out = tmp_path / "out"
    _disk_full_after(monkeypatch, safetensors.torch, "save_file", 3)
    with pytest.raises(RuntimeError, match=r"cannot write .*round01_chunk00000\.safetensors: the disk is full"):
        run_evaluation(EvalConfig(**TINY), out, env=QUIET_ENVIRONMENT)
    kept = sorted(p.name for p in (out / "results").iterdir())
    assert kept == ["round00_chunk00000.safetensors", "round00_chunk00001.safetensors"]  # no temporary file
    monkeypatch.undo()
    run_evaluation(EvalConfig(**TINY), out, env=QUIET_ENVIRONMENT)
    assert _files(out) == _files(finished)
    # through the command line: exit 1 and one line naming the file
    _disk_full_after(monkeypatch, safetensors.torch, "save_file", 1)
    capsys.readouterr()
    assert main([*SMALL_EVAL_ARGS, "--out", str(tmp_path / "cli")]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "round00_chunk00000.safetensors: the disk is full" in err[0]


def test_disk_full_during_the_demo_names_the_file_and_what_was_written(tmp_path, monkeypatch):
    from matplotlib.figure import Figure

    from lst_fast.commands.demo import run_demo

    _disk_full_after(monkeypatch, Figure, "savefig", 3)
    with pytest.raises(
        RuntimeError,
        match=r"cannot write .*linear_path\.png: the disk is full.*written: "
        r"result\.safetensors, grid\.png, path\.png\)",
    ):
        run_demo(out=tmp_path, iterations=2, progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["grid.png", "path.png", "result.safetensors"]


# -- one run per folder ---------------------------------------------------------------------------------


def test_a_second_run_in_a_locked_folder_is_refused_and_leaves_live_temporary_files(tmp_path):
    store = EvaluationStore(tmp_path)
    with store.locked():
        live = tmp_path / "results" / ".round00_chunk00000.safetensors.abc.tmp"
        live.parent.mkdir()
        live.write_bytes(b"being written")
        with pytest.raises(RuntimeError, match=rf"{tmp_path} is in use by another lst-fast eval \(pid {os.getpid()}\)"):
            run_evaluation(EvalConfig(**TINY), tmp_path, env=QUIET_ENVIRONMENT)
        assert live.read_bytes() == b"being written"
    assert not (tmp_path / "config.json").exists()
    run_evaluation(EvalConfig(**TINY), tmp_path, env=QUIET_ENVIRONMENT)  # the lock is free again
    assert not live.exists()  # stale now: removed by the run that holds the lock


# -- killed inside a write or in the triangle stage --------------------------------------------------------

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    """The evaluation of SMALL_EVAL_ARGS, run without interruption."""
    out = tmp_path_factory.mktemp("uninterrupted")
    run_evaluation(
        SMALL_EVAL,
        out,
        env=QUIET_ENVIRONMENT,
    )
    return out


@pytest.mark.parametrize(
    "hook",
    [
        "writing:round01_chunk00000.safetensors:1:SIGKILL",  # in the middle of a chunk's write
        "written:round01_chunk00001.safetensors:1:SIGKILL",  # the triangle stage, before its first file
        "writing:triangles_r00_r01.safetensors:1:SIGKILL",  # inside the triangle file's write
        "writing:tables.md:1:SIGKILL",  # inside the tables' write
    ],
)
def test_killed_inside_a_write_resumes_to_byte_identical_files(uninterrupted, tmp_path, hook):
    import signal
    import subprocess
    import sys

    out = tmp_path / "killed"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    killed = subprocess.run(  # interrupted at the hook's point by tests/kill_at_write.py
        [sys.executable, str(ROOT / "tests" / "kill_at_write.py"), hook, *SMALL_EVAL_ARGS, "--out", str(out)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    leftovers = list(out.rglob(".*.tmp"))
    assert len(leftovers) == (1 if hook.startswith("writing") else 0)
    assert not (out / "tables.md").exists()
    run_evaluation(
        SMALL_EVAL,
        out,
        env=QUIET_ENVIRONMENT,
    )
    assert not list(out.rglob(".*.tmp"))
    assert _files(out) == _files(uninterrupted)  # every result file, the tables and config.json
