"""The GPU run's tooling (bench/gpu_check.sh and its helpers), checked on the CPU with stand-ins for what
needs a GPU: pytest with a timeout per test, streamed output and reruns after a crash
(bench/pytest_resilient.py); the step caps and the sanitizer probe (bench/gpu_steps.sh); the gate that an
op ran with the compiled CUDA kernels (bench/gpu_gate.py)."""

from __future__ import annotations

import importlib.util
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from test_cuda_compat import stubbed_gpu  # noqa: F401  (the fixture: a fake GPU and driver)

from lst_fast import ops
from lst_fast.backends import cuda_compat

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "bench"
STUBS = ROOT / "tests" / "standins" / "resilient"


def _load_gate():
    """bench/gpu_gate.py as a module, without putting bench/ (its conftest.py, its test files) on sys.path."""
    spec = importlib.util.spec_from_file_location("gpu_gate", BENCH / "gpu_gate.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


gpu_gate = _load_gate()


def resilient(tmp_path, stub, *options, **popen):
    """bench/pytest_resilient.py on a stand-in test file copied to tmp_path (away from tests/conftest.py)."""
    shutil.copy(STUBS / stub, tmp_path / stub)
    command = [sys.executable, str(BENCH / "pytest_resilient.py"), *options, stub]
    return command, dict(cwd=tmp_path, env={**os.environ, "STUB_SLEEP_S": "60"}, **popen)


def test_a_hang_and_a_crash_cost_one_test_each(tmp_path):
    # 1 s: the stand-in that sleeps waits all of it; the others take milliseconds, far inside it on any machine.
    command, kw = resilient(tmp_path, "stub_hang_and_crash.py", "--test-timeout", "1")
    run = subprocess.run(command, capture_output=True, text=True, timeout=120, **kw)
    out = run.stdout + run.stderr
    assert run.returncode == 8, out
    assert out.count("test_passes_first PASSED") == 1  # not rerun
    assert out.count("test_passes_after PASSED") == 1  # reached after both
    assert "test_sleeps_past_its_timeout timed out after 1 s" in out
    assert "test_kills_itself crashed (SIGSEGV)" in out
    assert out.count("test session starts") == 3  # the first run and one rerun after each


def test_a_crash_at_exit_reruns_nothing(tmp_path):
    command, kw = resilient(tmp_path, "stub_crash_at_exit.py", "--test-timeout", "30")
    run = subprocess.run(command, capture_output=True, text=True, timeout=120, **kw)
    out = run.stdout + run.stderr
    assert run.returncode == 8, out
    assert out.count("test session starts") == 1 and out.count("PASSED") == 2
    assert "pytest crashed (SIGSEGV) outside a test" in out


def test_output_reaches_the_log_while_the_step_runs(tmp_path):
    """A step killed in the middle (gpu_check.sh's timeout) keeps every line so far in its log in $OUT."""
    log = tmp_path / "tests.log"
    with open(log, "w") as f:
        command, kw = resilient(tmp_path, "stub_hang_and_crash.py", "--test-timeout", "50", stdout=f, stderr=f)
        process = subprocess.Popen(command, start_new_session=True, **kw)
        try:
            deadline = time.monotonic() + 60
            while "test_sleeps_past_its_timeout" not in log.read_text() and time.monotonic() < deadline:
                time.sleep(0.2)
        finally:
            os.killpg(process.pid, signal.SIGKILL)  # the whole step: the runner and its pytest
            process.wait()
    assert "test_passes_first PASSED" in log.read_text()


def bash(script: str, tmp_path: Path, path_first: "Path | None" = None) -> subprocess.CompletedProcess:
    """`script` after sourcing bench/gpu_steps.sh, with a 300 s budget and the results in tmp_path."""
    env = {**os.environ, "OUT": str(tmp_path), "STATUS": str(tmp_path / "status.txt"), "STEP_MARGIN_S": "1"}
    if path_first is not None:
        env["PATH"] = f"{path_first}{os.pathsep}{env['PATH']}"
    prelude = f"source {BENCH / 'gpu_steps.sh'}; BUDGET=300; DEADLINE=$((SECONDS + 300)); "
    return subprocess.run(["bash", "-c", prelude + script], capture_output=True, text=True, env=env, timeout=120)


@pytest.mark.parametrize("estimate, left, cap", [(40, 265, 81), (10, 265, 21), (120, 100, 100), (25, 0, 0)])
def test_a_step_is_capped_at_twice_its_estimate_plus_the_margin(tmp_path, estimate, left, cap):
    assert bash(f"step_cap {estimate} {left}", tmp_path).stdout.strip() == str(cap)


def test_a_hanging_step_keeps_its_output_and_leaves_the_next_its_time(tmp_path):
    """Estimated 0 s, capped at 1 s (the margin; the hang waits all of it): cut short there, not at the budget,
    and the next step runs."""
    run = bash("step hang tests 0 bash -c 'echo before the hang; sleep 60'; step next tests 1 echo after", tmp_path)
    status = (tmp_path / "status.txt").read_text()
    assert "hang: CUT SHORT at its cap of 1 s (rc=124)" in status, run.stdout + run.stderr
    assert "next: ok" in status
    log = (tmp_path / "tests.log").read_text()
    assert "before the hang" in log and "after" in log


def fake_sanitizer(tmp_path: Path, body: str) -> Path:
    folder = tmp_path / "bin"
    folder.mkdir()
    tool = folder / "compute-sanitizer"
    tool.write_text("#!/bin/sh\n" + body + "\n")
    tool.chmod(0o755)
    return folder


def test_a_refused_sanitizer_is_unavailable_not_failed(tmp_path):
    refusing = fake_sanitizer(
        tmp_path, 'echo "========= Error: Device not supported"; echo "error 999: unknown error" >&2; exit 1'
    )
    bash("sanitizers probe.py memcheck initcheck racecheck", tmp_path, refusing)
    status = (tmp_path / "status.txt").read_text().splitlines()
    assert len(status) == 3 and all("unavailable here (it refused the device" in line for line in status), status
    assert not any("FAILED" in line for line in status)


def test_a_working_sanitizer_runs_every_tool(tmp_path):
    working = fake_sanitizer(tmp_path, 'echo "========= ERROR SUMMARY: 0 errors"; exit 0')
    bash("sanitizers probe.py memcheck initcheck racecheck", tmp_path, working)
    status = (tmp_path / "status.txt").read_text()
    for tool in ("memcheck", "initcheck", "racecheck"):
        assert f"sanitizer_{tool}: ok" in status, status


def uses_the_kernels(device: torch.device) -> None:
    """The first thing an op with backend='native' does on CUDA: the device check (stubbed GPU)."""
    ops._use_native("orthogonal_step", device, "native")


@pytest.fixture
def kernels_loaded(monkeypatch):
    monkeypatch.setattr(ops, "has_native_kernel", lambda name, device_type: True)
    monkeypatch.setattr(gpu_gate.lst_fast, "backend_info", lambda: {**real_info(), "cuda": "native"})


def real_info():
    from lst_fast.backends._extension import backend_info

    return backend_info()


def test_gate_passes_when_an_op_ran_with_the_kernels(stubbed_gpu, kernels_loaded):  # noqa: F811
    passed, lines = gpu_gate.gate("/", run_op=uses_the_kernels)
    assert passed, lines
    assert cuda_compat.cuda_checks() == {"cuda:0": None}


def test_gate_fails_when_the_device_check_refuses_the_gpu(stubbed_gpu, kernels_loaded):  # noqa: F811
    """Registered kernels and a GPU the check refuses: the ops would run the fallback, labelled native."""
    stubbed_gpu.update(name="Tesla V100-SXM2-16GB", capability=(7, 0))
    with pytest.warns(UserWarning):
        passed, lines = gpu_gate.gate("/", run_op=uses_the_kernels)
    assert not passed
    assert any("backend='native'" in line and "compute capability 7.0" in line for line in lines), lines


def test_gate_fails_when_no_op_ran(stubbed_gpu, kernels_loaded):  # noqa: F811
    """Registered kernels alone (the old gate's test) do not pass: no device check ran."""
    passed, lines = gpu_gate.gate("/", run_op=lambda device: None)
    assert not passed and any("no device check of cuda:0 ran" in line for line in lines), lines


def test_gate_fails_for_lst_fast_from_elsewhere(stubbed_gpu, kernels_loaded):  # noqa: F811
    passed, lines = gpu_gate.gate("/nowhere/", run_op=uses_the_kernels)
    assert not passed and any("not the one under /nowhere/" in line for line in lines), lines
