"""pytest for the GPU run: output straight to stdout as it comes (gpu_check.sh appends it to a file in
$OUT, so a step cut short keeps every line so far), a timeout per test, and after a crash or a timeout a
rerun of only the tests that never reported a result.

    python3 bench/pytest_resilient.py [--test-timeout S] [--reruns N] PYTEST_ARGS...

Each pytest run loads bench/pytest_plugin/lst_step_record.py, which records every test's start and end.
When a run dies, the test that started and never ended is the culprit: it is reported (timed out, or the
signal that ended the process) and deselected with every test that did end, and the rest run again, at
most --reruns times. A crash after the last test (at interpreter exit) reruns nothing.

Exit status: 0 every test passed or skipped; 1 a test failed (pytest's own status); CRASHED (8) a test
crashed or timed out, or pytest died outside a test; anything else is pytest's.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import List, Optional, Tuple

CRASHED = 8
PLUGIN_DIR = Path(__file__).resolve().parent / "pytest_plugin"


def read_record(path: str) -> Tuple[List[str], List[str]]:
    """The tests that started and the tests that ended, in order."""
    started, done = [], []
    for line in Path(path).read_text().splitlines():
        word, _, nodeid = line.partition(" ")
        (started if word == "start" else done).append(nodeid)
    return started, done


def culprit(started: List[str], done: List[str]) -> Optional[str]:
    """The test that started and never ended (the one running when the process died), if any."""
    ended = set(done)
    running = [n for n in started if n not in ended]
    return running[-1] if running else None


def how_it_ended(rc: int, timeout_s: float) -> str:
    if rc < 0:
        return f"crashed ({signal.Signals(-rc).name})"
    return f"timed out after {timeout_s:g} s (or exited with status {rc})"


def run_pytest(args: List[str], record: str, timeout_s: float) -> int:
    env = dict(os.environ, LST_STEP_RECORD=record, LST_TEST_TIMEOUT_S=str(timeout_s), PYTHONUNBUFFERED="1")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(PLUGIN_DIR), env.get("PYTHONPATH", "")) if p)
    command = [sys.executable, "-X", "faulthandler", "-m", "pytest", "-v", "-p", "no:cacheprovider"]
    command += ["-p", "lst_step_record", *args]
    sys.stdout.flush()
    return subprocess.run(command, env=env, check=False).returncode  # output goes straight to ours


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--test-timeout", type=float, default=60.0, help="seconds per test (0: none)")
    parser.add_argument("--reruns", type=int, default=5, help="runs after the first, each after a crash")
    options, pytest_args = parser.parse_known_args(argv)
    fd, record = tempfile.mkstemp(prefix="lst_step_record_", suffix=".txt")
    os.close(fd)
    deselect: List[str] = []
    lost: List[str] = []  # what each crash or timeout took
    try:
        for attempt in range(options.reruns + 1):
            Path(record).write_text("")
            rc = run_pytest(
                pytest_args + [a for n in deselect for a in ("--deselect", n)], record, options.test_timeout
            )
            started, done = read_record(record)
            bad = culprit(started, done)  # first: a timed-out test ends the process with status 1
            if bad is None and rc in (0, 1, 5):  # passed, some failed, nothing left to run: a normal end
                break
            if bad is None:
                lost.append(f"pytest {how_it_ended(rc, options.test_timeout)} outside a test")
                print(f"!!! pytest_resilient: {lost[-1]}; nothing to rerun", flush=True)
                break
            lost.append(f"{bad} {how_it_ended(rc, options.test_timeout)}")
            deselect += [n for n in done if n not in deselect] + [bad]
            print(
                f"!!! pytest_resilient: {lost[-1]} (run {attempt + 1}); rerunning the tests without a result",
                flush=True,
            )
        else:
            print(f"!!! pytest_resilient: stopped after {options.reruns} reruns", flush=True)
    finally:
        os.unlink(record)
    if lost:
        print("!!! pytest_resilient: crashed or timed out: " + "; ".join(lost), flush=True)
        return CRASHED
    return 0 if rc == 5 and deselect else rc


if __name__ == "__main__":
    sys.exit(main())
