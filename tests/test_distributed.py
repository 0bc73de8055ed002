"""lst_fast.distributed: under torchrun, a process group that does not form stops within the join timeout,
saying so, instead of waiting torch's 30 minutes (the whole group at work: test_evaluation's 2-process run)."""

from __future__ import annotations

import socket
import time

import pytest

from lst_fast.cli import main
from lst_fast.distributed import process_group


@pytest.fixture
def rank_0_of_2_alone(monkeypatch):
    """The environment torchrun gives rank 0 of 2, with no rank 1 ever coming."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    for name, value in (("RANK", "0"), ("LOCAL_RANK", "0"), ("WORLD_SIZE", "2"), ("MASTER_ADDR", "127.0.0.1")):
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("MASTER_PORT", str(port))


def test_outside_torchrun_the_device_is_used_as_is(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    with process_group("cpu") as device:
        assert device == "cpu"
    with pytest.raises(ValueError, match="join_timeout_s must be"):
        with process_group("cpu", 0):
            pass


def test_a_group_that_never_forms_stops_within_the_join_timeout(rank_0_of_2_alone):
    import torch.distributed as dist

    start = time.monotonic()
    with pytest.raises(RuntimeError, match=r"rank 0 of 2: the gloo process group at 127\.0\.0\.1:\d+ did not form"):
        with process_group("cpu", 0.5):  # torch's store waits whole seconds: 1 s here, 2 s for 1.0
            pass
    assert time.monotonic() - start < 30  # torch's own bound: 30 minutes
    assert not dist.is_initialized()


def test_eval_says_so_in_one_line_with_exit_code_1(rank_0_of_2_alone, tmp_path, capsys):
    args = ["eval", "--data", "fashion-mnist-sample", "--num-samples", "2", "--iterations", "1", "--join-timeout=0.5"]
    assert main([*args, "--out", str(tmp_path / "o"), "--no-progress"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "did not form within 0.5 s" in err and "--join-timeout" in err
    assert not (tmp_path / "o").exists()
