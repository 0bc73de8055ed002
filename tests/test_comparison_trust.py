"""Comparisons that cannot mislead, through the command line: an evaluation on a shared pool takes the
pool's seed and rounds (a conflicting flag is refused), compare reads pairing from the result files, a
degenerate ranking is refused or told, every JSON file is standard, every flag is range-checked before any
work, a missing GPU is named first, and errors are classified by type (a failed torchrun peer, an error in
a DataLoader worker: one line, exit code 1)."""

from __future__ import annotations

import json
import textwrap

import pytest
import torch

from lst_fast.evaluation.pool import build_pool
from lst_fast.run_environment import QUIET_ENVIRONMENT, RunEnvironment
from conftest import cli_exit_code

DATA = "fashion-mnist-sample"
FAST = ["--iterations", "2", "--chunk-size", "8", "--no-progress"]


def _strict_json(path):
    """The file's JSON, refusing the non-standard NaN and Infinity tokens (as standard parsers do)."""

    def refuse(token):
        raise AssertionError(f"{path} holds {token}")

    return json.loads(path.read_text(), parse_constant=refuse)


def _one_error_line(capsys, code):
    captured = capsys.readouterr()
    assert code == 1, captured.err
    assert captured.err.count("\n") == 1 and "internal error" not in captured.err, captured.err
    return captured


def test_eval_on_a_pool_takes_its_seed_and_rounds_and_refuses_other_values(tmp_path, capsys):
    pool, _ = build_pool(["cnn"], DATA, 6, seed=3, rounds=2, env=QUIET_ENVIRONMENT)
    pool.save(tmp_path / "pool.json")
    base = ["eval", "--pool", str(tmp_path / "pool.json"), *FAST]
    for flag in (["--seed", "0"], ["--rounds", "3"], ["--num-samples", "50"], ["--min-confidence", "0.5"]):
        captured = _one_error_line(capsys, cli_exit_code([*base, *flag, "--out", str(tmp_path / "refused")]))
        assert "differ from it" in captured.err and flag[0][2:].replace("-", "_") in captured.err
        assert not (tmp_path / "refused").exists() and "compiled" not in captured.out  # refused before anything
    assert cli_exit_code([*base, "--seed", "3", "--out", str(tmp_path / "same")]) == 0  # the pool's own value is fine
    assert cli_exit_code([*base, "--model", "cnn-robust", "--out", str(tmp_path / "b")]) == 0
    config = json.loads((tmp_path / "b" / "config.json").read_text())
    assert config["seed"] == 3 and config["rounds"] == 2 and config["pool"] == pool.digest
    capsys.readouterr()
    assert cli_exit_code(["compare", str(tmp_path / "same"), str(tmp_path / "b"), "--out", str(tmp_path / "cmp")]) == 0
    note = _strict_json(tmp_path / "cmp" / "compare.json")["shared_pool"]
    assert note["paired"] and note["shared_sources"] >= 2


def test_compare_says_the_triangle_grids_differ(tmp_path, capsys):
    """`--triangle-n` is recorded like every setting: two runs on other grids are compared with the
    difference said under each table (their fractions estimate the same area on other grids)."""
    for n in ("2", "3"):
        args = ["eval", "--data", DATA, "--num-samples", "6", "--rounds", "2", "--triangle-n", n, *FAST]
        assert cli_exit_code([*args, "--out", str(tmp_path / n)]) == 0
    capsys.readouterr()
    assert cli_exit_code(["compare", str(tmp_path / "2"), str(tmp_path / "3"), "--out", str(tmp_path / "c")]) == 0
    out = capsys.readouterr().out
    assert out.count("settings differ between the runs: triangle_n") == 2, out


def test_compare_reads_pairing_from_the_result_files(tmp_path, capsys):
    """Two runs on their own pools: paired when their files show the same sources and targets (the same
    seed), unpaired when another seed drew other targets (on main: both 'do not share a pool')."""
    from lst_fast.evaluation import EvalConfig, run_evaluation

    # The runs through the API (the command under test is compare), on a 2-step triangle grid (6 points a
    # triangle, not 66): pairing is read from the sources and targets.
    own = EvalConfig(data=DATA, num_samples=6, rounds=2, iterations=2, chunk_size=8, triangle_n=2)
    for name, seed in (("a", 0), ("b", 0), ("c", 1)):
        run_evaluation(own.replace(seed=seed), tmp_path / name, env=QUIET_ENVIRONMENT)
    assert cli_exit_code(["compare", str(tmp_path / "a"), str(tmp_path / "b"), "--out", str(tmp_path / "ab")]) == 0
    assert _strict_json(tmp_path / "ab" / "compare.json")["shared_pool"]["paired"]
    assert cli_exit_code(["compare", str(tmp_path / "a"), str(tmp_path / "c"), "--out", str(tmp_path / "ac")]) == 0
    note = _strict_json(tmp_path / "ac" / "compare.json")["shared_pool"]
    assert not note["paired"] and "unpaired" in note["text"]
    assert "other targets" in note["text"] or "share no source" in note["text"]


BLIND = """
import torch


class Blind(torch.nn.Module):
    def forward(self, x):
        return torch.zeros(x.shape[0], 10, device=x.device)  # every class 0.1: never above 0.6


def build():
    return Blind()
"""


def test_a_leaderboard_with_one_round_a_model_without_sources_and_standard_json(tmp_path, capsys):
    out = tmp_path / "board"
    args = ["leaderboard", "--data", DATA, "--num-samples", "6", "--resamples", "20", "--out", str(out), *FAST]
    # The default ranking column is a triangle statistic: one round is refused before any work.
    _one_error_line(capsys, cli_exit_code([*args, "--model", "cnn", "--rounds", "1"]))
    assert not (out / "pool.json").exists()
    args += ["--rounds", "1", "--rank-by", "confidence"]
    assert cli_exit_code([*args, "--model", "cnn", "cnn-robust"]) == 0
    (tmp_path / "blind.py").write_text(textwrap.dedent(BLIND))
    blind = f"py:{tmp_path / 'blind.py'}:build"
    assert cli_exit_code([*args, "--model", "cnn", "cnn-robust", blind]) == 0  # a model added later, with no sources
    board = _strict_json(out / "leaderboard.json")
    rows = {row["model"]: row for row in board["rows"]}
    assert rows[blind]["sources"] == 0 and rows[blind]["rank"] is None and "classifies 0" in rows[blind]["note"]
    assert rows["cnn"]["rank"] == 1 and rows["cnn-robust"]["rank"] >= 1  # the others are still ranked
    assert rows["cnn"]["values"]["mean"]["mean"] is None  # a triangle column with one round: null, not NaN
    markdown = (out / "leaderboard.md").read_text()
    assert f"| - | `{blind}` |" in markdown and "Not ranked ('-')" in markdown
    for name in ("cnn", "cnn-robust"):
        _strict_json(out / name / "tables.json")


@pytest.mark.parametrize(
    "command,flag",
    [
        ("eval", ["--seed", str(2**63)]),
        ("eval", ["--seed", "-1"]),
        ("eval", ["--rounds", "0"]),
        ("eval", ["--workers", "-1"]),
        ("eval", ["--join-timeout", "nan"]),
        ("eval", ["--min-confidence", "1.5"]),
        ("leaderboard", ["--digits", "-1"]),
        ("leaderboard", ["--resamples", "5"]),
        ("leaderboard", ["--batch-size", "0"]),
        ("compare", ["--digits", "99"]),
        ("run", ["--seed", str(2**64)]),
        ("run", ["--source-label", "-1"]),
        ("run", ["--input-size", "0"]),
        ("run", ["--figures", "-1"]),
        ("run", ["--bounds", "0", "inf"]),
        ("run", ["--mean", "nan"]),
        ("run", ["--std", "0"]),
        ("run", ["--record-every", "-2"]),
        ("bench", ["--batch-size", "0"]),
        ("bench", ["--image-size", "99999"]),
        ("bench", ["--iterations", "0"]),
        ("bench", ["--repeats", "0"]),
        ("run", ["--step-size", "0"]),
        ("run", ["--init-noise", "-1"]),
    ],
)
def test_every_flag_value_is_range_checked_when_parsed(tmp_path, capsys, command, flag):
    needed = {
        "eval": ["--out", str(tmp_path / "o")],
        "leaderboard": ["--model", "cnn", "--data", DATA, "--out", str(tmp_path / "o")],
        "compare": [str(tmp_path)],
        "run": ["--model", "cnn", "--source", str(tmp_path), "--target", str(tmp_path)],
        "bench": [],
    }[command]
    captured = _one_error_line(capsys, cli_exit_code([command, *needed, *flag]))
    assert flag[0] in captured.err and captured.out == "" and not (tmp_path / "o").exists()


def test_no_flag_takes_a_bare_int_or_float():
    """Every number a flag takes goes through a type that checks its range (lst_fast.cli.arguments), so a
    new flag with a bare `type=int` or `type=float` fails here, not on a user's bad value."""
    import argparse

    from lst_fast.cli import build_parser

    commands = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)).choices
    bare = [
        f"{name} {action.option_strings[0]}"
        for name, parser in commands.items()
        for action in parser._actions
        if action.type in (int, float)
    ]
    assert len(commands) >= 9 and bare == []


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a GPU")
def test_a_cuda_device_without_a_gpu_is_named_before_anything_runs(tmp_path, capsys):
    for device in ("cuda", "cuda:1"):
        captured = _one_error_line(capsys, cli_exit_code(["eval", "--device", device, "--out", str(tmp_path / "o")]))
        assert "no CUDA GPU" in captured.err and captured.out == ""


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_a_cuda_device_index_that_does_not_exist_is_named(tmp_path, capsys):
    device = f"cuda:{torch.cuda.device_count()}"
    captured = _one_error_line(capsys, cli_exit_code(["eval", "--device", device, "--out", str(tmp_path / "o")]))
    assert "CUDA device(s)" in captured.err


def test_exit_codes_come_from_types():
    from lst_fast.cli.errors import is_expected
    from lst_fast.errors import DataError, EnvironmentFault, InputError, LstFastError, PeerFailed
    from lst_fast.walk.settings import LSTSettings

    with pytest.raises(InputError) as raised:
        LSTSettings(step_size=-1)  # lst_fast's own checks raise its own types
    assert isinstance(raised.value, ValueError) and isinstance(raised.value, LstFastError)
    for error in (InputError("x"), DataError("x"), EnvironmentFault("x"), PeerFailed("x"), OSError("x")):
        assert is_expected(error)
    for error in (ValueError("x"), RuntimeError("x"), TypeError("x"), KeyError("x"), OverflowError("x")):
        assert not is_expected(error)  # the standard types come from torch, Python or a bug


def test_a_failed_torchrun_peer_is_one_line_not_an_internal_error(monkeypatch):
    import torch.distributed as dist

    from lst_fast.distributed import barrier
    from lst_fast.errors import PeerFailed

    def closed():
        raise RuntimeError("[../gloo/transport/tcp/pair.cc:534] Connection closed by peer [127.0.0.1]:29500")

    monkeypatch.setattr(dist, "barrier", closed)
    monkeypatch.setattr(dist, "get_rank", lambda: 1)
    with pytest.raises(PeerFailed, match="rank 1 of 2: another process of the group failed") as raised:
        barrier(2)
    assert "\n" not in str(raised.value)


def test_an_error_in_a_dataloader_worker_is_its_own_line_naming_the_file():
    from lst_fast.cli.errors import is_expected
    from lst_fast.data.image_set import ImageSet
    from lst_fast.errors import InputError
    from lst_fast.evaluation.pool import classify

    def fetch(index):
        raise InputError("cannot read the image /data/cls/broken.png: cannot identify image file")

    data = ImageSet(torch.zeros(8, dtype=torch.long), fetch, "imagefolder:/data")
    with pytest.raises(InputError) as raised:
        classify(torch.nn.Flatten(), data, torch.arange(8), env=RunEnvironment(workers=1, batch_size=4))
    message = str(raised.value)
    assert message == "cannot read the image /data/cls/broken.png: cannot identify image file"
    assert is_expected(raised.value) and "DataLoader worker" in "".join(getattr(raised.value, "__notes__", []))
