"""Every count that sizes the work has an upper bound, checked before the work: a flag when parsed, a pool
file when read, a size against this machine's memory before any LST; what still runs out of CPU memory is
named with its size (exit code 1). And a command cannot be pointed at a result that would mislead: a
folder compared with itself, a leaderboard folder whose pool.json was deleted and rebuilt by other models."""

from __future__ import annotations

import copy
import json

import pytest
import torch

from lst_fast.evaluation.pool import build_pool
from lst_fast.evaluation.pool_file import content_digest
from lst_fast.run_environment import QUIET_ENVIRONMENT
from conftest import cli_exit_code

DATA = "fashion-mnist-sample"
FAST = ["--iterations", "2", "--chunk-size", "8", "--no-progress"]
BOARD = ["leaderboard", "--data", DATA, "--num-samples", "6", "--rounds", "2", "--resamples", "20", *FAST]


def _refused(capsys, code, *words):
    captured = capsys.readouterr()
    assert code == 1, captured.err
    assert captured.err.count("\n") == 1 and "internal error" not in captured.err, captured.err
    assert all(w in captured.err for w in words), captured.err
    return captured


@pytest.mark.parametrize(
    "command,flag",
    [
        ("eval", ["--simplex-points", str(10**12)]),
        ("eval", ["--simplex-subsets", str(10**12)]),
        ("eval", ["--rounds", str(10**12)]),
        ("eval", ["--num-samples", str(10**12)]),
        ("eval", ["--chunk-size", str(10**9)]),
        ("eval", ["--triangle-n", str(10**6)]),
        ("leaderboard", ["--triangle-n", "201"]),
        ("eval", ["--join-timeout", "1e14"]),  # beyond datetime.timedelta: an OverflowError on main
        ("leaderboard", ["--resamples", str(10**7)]),
        ("leaderboard", ["--batch-size", str(10**9)]),
        ("leaderboard", ["--join-timeout", "1e14"]),
    ],
)
def test_flags_whose_cost_grows_with_their_value_are_bounded_when_parsed(tmp_path, capsys, command, flag):
    needed = ["--out", str(tmp_path / "o")] + (["--model", "cnn", "--data", DATA] if command == "leaderboard" else [])
    captured = _refused(capsys, cli_exit_code([command, *needed, *flag]), flag[0], "expected")
    assert captured.out == "" and not (tmp_path / "o").exists()


def test_simplices_that_do_not_fit_the_memory_are_refused_before_any_work(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr("lst_fast.walk.batching.available_memory", lambda: 2**20)  # a machine with 1 MiB free
    out = tmp_path / "o"
    args = ["eval", "--data", DATA, "--num-samples", "6", "--rounds", "2", *FAST, "--out", str(out)]
    _refused(capsys, cli_exit_code([*args, "--simplex-points", "100000"]), "--simplex-points 100000", "GiB of memory")
    assert not out.exists()
    with pytest.raises(Exception, match="at most --rounds 20"):
        from lst_fast.evaluation.simplices import SimplexSettings

        SimplexSettings(points=4).validate(21)  # C(21, k) subsets listed for each k


def test_resamples_that_do_not_fit_the_memory_are_refused_before_any_evaluation(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr("lst_fast.walk.batching.available_memory", lambda: 2**20)
    out = tmp_path / "board"
    args = [*BOARD, "--model", "cnn", "--out", str(out)]
    _refused(capsys, cli_exit_code([*args[:8], "1000000", *args[9:]]), "--resamples 1000000", "lower --resamples")
    assert (out / "pool.json").is_file() and not (out / "cnn").exists()  # the pool, but no LST


def test_running_out_of_cpu_memory_is_exit_1_with_the_size(capsys, monkeypatch):
    from lst_fast import cli

    def too_large(args):
        return torch.empty(10**15, dtype=torch.uint8)  # the allocator refuses it at once

    monkeypatch.setattr(cli.info, "command", too_large)
    _refused(capsys, cli.main(["info"]), "out of memory: could not allocate 1,000,000,000,000,000 bytes")


@pytest.fixture(scope="module")
def pool_values():
    """The fields of one pool of the cnn, built once for the cases below (each changes its own copy)."""
    pool, _ = build_pool(["cnn"], DATA, 6, seed=0, rounds=2, env=QUIET_ENVIRONMENT)
    return pool.to_dict()


def _resigned_pool(tmp_path, pool_values, change):
    values = copy.deepcopy(pool_values)
    change(values)
    values["digest"] = content_digest(values)
    path = tmp_path / "pool.json"
    path.write_text(json.dumps(values))
    return path


@pytest.mark.parametrize(
    "change,words",
    [
        (lambda v: v["settings"].update(rounds=10**12), ["settings.rounds must be an integer in [1, 100]"]),
        (lambda v: v["models"][0].update(preprocessing={}), ["models[0].preprocessing must be an object"]),
        (lambda v: v["settings"].update(num_samples=10**12), ["settings.num_samples must be an integer in [1,"]),
        (lambda v: v["scan"].update(workers=10**9), ["scan.workers must be an integer in [0, 256]"]),
        (lambda v: v["scan"]["forwards"].update(cnn=10**12), ["scan.forwards['cnn'] must be an integer in [0, 100]"]),
        (
            lambda v: v["models"][0]["preprocessing"].update(input_size=[1, 10**9, 10**9]),
            ["input_size must be [C, H, W], integers in [1, 16384]"],
        ),
        (lambda v: v["models"][0]["preprocessing"].update(crop_pct="x"), ["preprocessing must be a model's"]),
    ],
)
def test_every_count_of_a_re_signed_pool_has_an_upper_bound(tmp_path, capsys, pool_values, change, words):
    """A pool re-signed with rounds = 10**12 looped in round_targets without end; one with an empty
    preprocessing block was an internal error (exit code 2)."""
    path = _resigned_pool(tmp_path, pool_values, change)
    out = tmp_path / "o"
    _refused(capsys, cli_exit_code(["eval", "--pool", str(path), *FAST, "--out", str(out)]), str(path), *words)
    assert not out.exists()
    from lst_fast.evaluation.targets import round_targets

    with pytest.raises(ValueError, match=r"rounds must be in \[1, 100\]"):
        round_targets(torch.arange(4), 10**12, 0)


def test_compare_refuses_a_folder_given_twice(tmp_path, capsys):
    run = tmp_path / "run"
    assert cli_exit_code(["eval", "--data", DATA, "--num-samples", "4", "--rounds", "2", *FAST, "--out", str(run)]) == 0
    capsys.readouterr()
    for twice in ([str(run), str(run)], [str(run), str(tmp_path / "." / "run") + "/"]):
        out = tmp_path / "cmp"
        _refused(capsys, cli_exit_code(["compare", *twice, "--out", str(out)]), "cannot compare a run with itself")
        assert not out.exists()


def test_a_deleted_pool_rebuilt_by_other_models_is_refused_and_the_same_one_goes_on(tmp_path, capsys):
    out = tmp_path / "board"
    assert cli_exit_code([*BOARD, "--model", "cnn", "cnn-robust", "--out", str(out)]) == 0
    digest = json.loads((out / "pool.json").read_text())["digest"]
    scan = (out / "cnn" / "scan.json").read_text()
    (out / "pool.json").unlink()
    capsys.readouterr()
    code = cli_exit_code([*BOARD, "--model", "cnn", "vit", "--out", str(out)])
    _refused(capsys, code, "pool.json is missing", "holds evaluations on another pool", "nothing was written")
    assert not (out / "pool.json").exists() and (out / "cnn" / "scan.json").read_text() == scan
    assert cli_exit_code([*BOARD, "--model", "cnn", "cnn-robust", "--out", str(out)]) == 0  # the same pool again
    assert json.loads((out / "pool.json").read_text())["digest"] == digest
