"""The evaluation: tables from chunked results, resume after deletion or SIGKILL, config guard."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from lst_fast.evaluation import EvalConfig, run_evaluation
from lst_fast.evaluation.tables import TABLE1, TABLE2
from lst_fast.run_environment import QUIET_ENVIRONMENT
from conftest import torch_threads

ROOT = Path(__file__).resolve().parents[1]
# triangle_n=3 (10 points a triangle, one inside; the default 10 has 66): no test here checks triangle values,
# only that tables match, exist or are drawn, and the triangles are most of a small run's time.
SMALL = dict(data="fashion-mnist-sample", num_samples=20, rounds=3, iterations=6, chunk_size=8, triangle_n=3)


def test_tables_and_resume_after_deleted_chunks(tmp_path):
    cfg = EvalConfig(**SMALL)
    tables = run_evaluation(cfg, tmp_path, env=QUIET_ENVIRONMENT)
    assert set(tables["table1"]) == set(TABLE1) and set(tables["table2"]) == set(TABLE2)
    assert tables["pairs"] == 60 and tables["sources"] == 20
    assert all(v[0] == v[0] for v in tables["table1"].values())  # no NaN
    results = sorted((tmp_path / "results").iterdir())
    assert len([p for p in results if p.name.startswith("round")]) == 9  # 3 rounds x 3 chunks
    assert len([p for p in results if p.name.startswith("triangles")]) == 3  # pairs of rounds
    first = (tmp_path / "tables.json").read_text()
    (tmp_path / "results" / "round01_chunk00002.safetensors").unlink()
    (tmp_path / "results" / "triangles_r00_r01.safetensors").unlink()
    kept = tmp_path / "results" / "round00_chunk00000.safetensors"
    mtime = kept.stat().st_mtime_ns
    run_evaluation(EvalConfig(**SMALL), tmp_path, env=QUIET_ENVIRONMENT)
    assert (tmp_path / "tables.json").read_text() == first  # identical tables
    assert kept.stat().st_mtime_ns == mtime  # finished chunks are not recomputed
    assert "Table 2" in (tmp_path / "tables.md").read_text()


def test_one_run_and_the_side_by_side_tables_share_their_titles_and_numbers(tmp_path):
    """tables.md and compare's tables are made from one list of titles and columns (evaluation.tables)."""
    from lst_fast.evaluation.finished import load_finished
    from lst_fast.evaluation.tables import TITLES, side_by_side, side_by_side_markdown, table2_per_source

    cfg = EvalConfig(**{**SMALL, "rounds": 1, "num_samples": 8})
    tables = run_evaluation(cfg, tmp_path, env=QUIET_ENVIRONMENT)
    one_run = (tmp_path / "tables.md").read_text()
    run = load_finished(tmp_path)  # the one loader of a finished evaluation, as compare reads it
    assert (
        run.config == cfg.to_dict()
        and run.tables["sources"] == json.loads((tmp_path / "tables.json").read_text())["sources"]
    )
    for key, title in TITLES.items():
        assert f"## {title}" in one_run
        assert side_by_side_markdown(side_by_side([run], key, ["cnn"], 4)).startswith(f"## {title}\n")
    m, s = tables["table1"]["rms"]
    assert f"{m:.4f} ± {s:.4f}" in one_run
    # One round: no pair of outputs, so Table 2 is empty (NaN), not an error.
    assert all(v != v for v, _ in tables["table2"].values())
    assert all(t.numel() == 0 for t in table2_per_source([], cfg.triangle_n, 8).values())


def test_results_folder_of_another_configuration_is_refused(tmp_path):
    run_evaluation(EvalConfig(**{**SMALL, "rounds": 1}), tmp_path, env=QUIET_ENVIRONMENT)
    with pytest.raises(ValueError, match="another configuration"):
        run_evaluation(EvalConfig(**{**SMALL, "rounds": 1, "threshold": 0.1}), tmp_path, env=QUIET_ENVIRONMENT)
    with pytest.raises(ValueError, match=r"num_samples must be an integer in \[1, 10,000,000\]"):
        run_evaluation(EvalConfig(**{**SMALL, "num_samples": 0}), tmp_path / "other", env=QUIET_ENVIRONMENT)


def _count(folder: Path) -> int:
    return len(list((folder / "results").glob("round*.safetensors")))


def _start_and_stop(args, env, out: Path, after_chunks: int, sig) -> int:
    """Start an eval, send `sig` once `after_chunks` chunk files exist; return the process's exit code."""
    proc = subprocess.Popen(args + ["--out", str(out)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 300
    while time.time() < deadline and _count(out) < after_chunks and proc.poll() is None:
        time.sleep(0.02)
    proc.send_signal(sig)
    proc.wait(timeout=120)
    return proc.returncode


def test_a_run_killed_several_times_resumes_to_the_same_tables(tmp_path):
    from safetensors.torch import load_file

    args = [
        sys.executable,
        "-m",
        "lst_fast",
        "eval",
        "--data",
        "fashion-mnist-sample",
        "--num-samples",
        "12",
        "--rounds",
        "2",
        "--iterations",
        "40",
        "--chunk-size",
        "2",  # 12 chunk files, the kills below land after 2, 5 and 8; chunks of 2 sources keep each short
        "--triangle-n",
        "3",  # 10 points a triangle: the tables still hold triangle values to compare
        "--no-progress",
    ]
    from lst_fast.cli import main

    assert main([*args[3:], "--out", str(tmp_path / "whole")]) == 0  # the uninterrupted run, in this process
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    killed = tmp_path / "killed"
    for after in (2, 5, 8):  # SIGKILL at three points of the same run
        assert _start_and_stop(args, env, killed, after, signal.SIGKILL) == -signal.SIGKILL
        assert after <= _count(killed) < 12, "each kill should land in the middle of the run"
        for path in (killed / "results").glob("round*.safetensors"):  # atomic writes: no partial result
            assert "images" in load_file(str(path))
    assert main([*args[3:], "--out", str(killed)]) == 0  # the resume, in this process: the kills are what need one
    assert not list((killed / "results").glob(".*.tmp"))
    assert json.loads((killed / "tables.json").read_text()) == json.loads(
        (tmp_path / "whole" / "tables.json").read_text()
    )


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)  # Python then installs its KeyboardInterrupt handler


def test_sigint_stops_cleanly_and_keeps_finished_chunks(tmp_path):
    """The run sends itself SIGINT right after its second chunk file is written (tests/kill_at_write.py,
    no timing), so the signal always lands in the middle of the run, however busy the machine."""
    args = [
        sys.executable,
        str(ROOT / "tests" / "kill_at_write.py"),
        "written:round*_chunk*:2:SIGINT",
        "eval",
        "--data",
        "fashion-mnist-sample",
        "--num-samples",
        "24",
        "--rounds",
        "2",
        "--iterations",
        "4",
        "--chunk-size",
        "4",
        "--no-progress",
    ]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = tmp_path / "stopped"
    # A background job of a shell without job control (pytest ... &) inherits SIGINT as ignored, and
    # Python keeps it ignored: the child starts with the default disposition, as from a terminal.
    proc = subprocess.run(
        args + ["--out", str(out)], env=env, capture_output=True, text=True, timeout=300, preexec_fn=_default_sigint
    )
    assert proc.returncode == 130 and "interrupted; finished work is saved" in proc.stderr, proc.stderr
    assert _count(out) == 2 and not (out / "tables.json").exists()
    assert not list(out.rglob(".*.tmp"))


def test_two_process_gloo_run_equals_one_process(tmp_path):
    args = [
        "--data",
        "fashion-mnist-sample",
        "--num-samples",
        "8",
        "--rounds",
        "3",
        "--iterations",
        "8",
        "--chunk-size",
        "2",  # 12 chunk files and 3 triangle files to share out, over 8 sources (the triangles' cost)
        "--triangle-n",
        "3",
        "--no-progress",
    ]
    from lst_fast.cli import main

    with torch_threads(1):  # one process in this one (a torch start fewer), computing as each worker does
        assert main(["eval", *args, "--out", str(tmp_path / "one")]) == 0
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    two = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc_per_node=2",
            "-m",
            "lst_fast",
            "eval",
            *args,
            "--out",
            str(tmp_path / "two"),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert two.returncode == 0, two.stderr[-3000:]
    assert json.loads((tmp_path / "two" / "tables.json").read_text()) == json.loads(
        (tmp_path / "one" / "tables.json").read_text()
    )
    assert len(list((tmp_path / "two" / "results").glob("round*.safetensors"))) == 12


def test_report_of_a_finished_evaluation(tmp_path):
    from lst_fast.evaluation import write_report

    run_evaluation(EvalConfig(**{**SMALL, "rounds": 2}), tmp_path, env=QUIET_ENVIRONMENT)
    report = write_report(tmp_path, pairs=4)
    text = report.read_text()
    for name in ("report_pairs.png", "report_linear_path.png", "report_triangles.png", "report_width.png"):
        assert (tmp_path / name).stat().st_size > 0 and name in text
    assert "Table 1" in text
    with pytest.raises(FileNotFoundError, match="not a finished evaluation"):
        write_report(tmp_path / "nothing")


def test_eval_on_a_tensor_file_with_a_checkpointed_model(tmp_path):
    from safetensors.torch import save_file

    from lst_fast.data.fashion_mnist import load_sample
    from lst_fast.models import load_model

    images, labels = load_sample()
    save_file({"images": images, "labels": labels}, str(tmp_path / "data.safetensors"))
    save_file({k: v.contiguous() for k, v in load_model("cnn").state_dict().items()}, str(tmp_path / "w.safetensors"))
    cfg = EvalConfig(
        model="fashion_cnn",
        checkpoint=str(tmp_path / "w.safetensors"),
        data=f"tensor:{tmp_path / 'data.safetensors'}",
        num_samples=10,
        rounds=2,
        iterations=3,
        chunk_size=5,
        triangle_n=3,  # as SMALL's: only Table 1 is compared
    )
    tables = run_evaluation(cfg, tmp_path / "out", env=QUIET_ENVIRONMENT)
    same = run_evaluation(
        EvalConfig(**{**SMALL, "num_samples": 10, "rounds": 2, "iterations": 3, "chunk_size": 5}),
        tmp_path / "ref",
        env=QUIET_ENVIRONMENT,
    )
    assert tables["table1"] == same["table1"]  # the same model and images, loaded another way


def test_config_guard_knows_precision_and_refuses_an_incomplete_config(tmp_path):
    from lst_fast.evaluation import EvaluationStore

    store = EvaluationStore(tmp_path)
    store.check_or_write_config(EvalConfig())
    assert store.read_config() == EvalConfig()
    incomplete = EvalConfig().to_dict()
    del incomplete["precision"]  # no setting takes a default from a config.json that lacks it
    (tmp_path / "config.json").write_text(json.dumps(incomplete))
    with pytest.raises(ValueError, match=r"another configuration.*'precision': \(None, 'fp32'\)"):
        store.check_or_write_config(EvalConfig())
    with pytest.raises(ValueError, match=r"missing evaluation settings \['precision'\]"):
        store.read_config()
    (tmp_path / "config.json").write_text(json.dumps(EvalConfig().to_dict()))
    with pytest.raises(ValueError, match="precision"):
        store.check_or_write_config(EvalConfig(precision="bf16"))
    with pytest.raises(ValueError, match="precision must be"):
        EvalConfig(precision="fp8")


def test_config_json_is_flat():
    """config.json holds the evaluation's own fields and the recorded LST settings side by side, and
    from_dict reads exactly those keys."""
    keys = {
        "model",
        "checkpoint",
        "pretrained",
        "data",
        "rounds",
        "num_samples",
        "min_confidence",
        "iterations",
        "step_size",
        "threshold",
        "adv_step_size",
        "init_noise",
        "triangle_n",
        "chunk_size",
        "seed",
        "precision",
    }
    cfg = EvalConfig(iterations=7, threshold=0.1)
    assert set(cfg.to_dict()) == keys
    assert cfg.lst.step_size == 5e-2 and cfg.lst.iterations == 7  # the evaluation's own step default
    assert EvalConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match="unknown evaluation settings"):
        EvalConfig.from_dict({**cfg.to_dict(), "colour": 1})
    with pytest.raises(ValueError, match=r"missing evaluation settings \['seed'\]"):
        EvalConfig.from_dict({k: v for k, v in cfg.to_dict().items() if k != "seed"})


def test_store_names_and_atomic_writes(tmp_path):
    import torch

    from lst_fast.evaluation import EvaluationStore

    store = EvaluationStore(tmp_path)
    store.check_or_write_config(EvalConfig())
    store.prepare()
    assert store.chunk_path(1, 2).name == "round01_chunk00002.safetensors"
    assert store.triangles_path(0, 3).name == "triangles_r00_r03.safetensors"
    assert not store.has_chunk(0, 0, EvalConfig())
    store.write_chunk(0, 0, {"images": torch.ones(2, 1, 2, 2)}, EvalConfig())
    store.write_chunk(0, 1, {"images": torch.zeros(1, 1, 2, 2)}, EvalConfig())
    assert store.has_chunk(0, 0, EvalConfig()) and store.read_round(0, 2)["images"].shape == (3, 1, 2, 2)
    store.write_triangles(0, 1, torch.rand(3, 66), EvalConfig())
    assert store.has_triangles(0, 1, EvalConfig()) and store.read_triangles(0, 1).shape == (3, 66)
    (store.results / ".round00_chunk00002.safetensors.x.tmp").write_text("partial")
    store.remove_leftovers()
    assert not list(store.results.glob(".*.tmp"))
    with pytest.raises(FileNotFoundError, match="tables.md is missing"):
        store.require_finished()
