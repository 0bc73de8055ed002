"""A pytest plugin for the GPU run (bench/pytest_resilient.py loads it with -p): each test's start and end
written to a record file as they happen, and a timeout of each test's own.

LST_STEP_RECORD=FILE: appends "start NODEID" before a test and "done NODEID" after its teardown, flushed
and synced, so a run that dies (a crash, a timeout, the step's own kill) leaves which tests reported.
LST_TEST_TIMEOUT_S=S: a test that runs longer than S seconds (setup and teardown included) has every
thread's traceback written to stderr and the process ended (faulthandler's watchdog: a C thread, so it
fires even when a hung CUDA call holds the GIL). Our own few lines rather than pytest-timeout: nothing to
carry to a machine without a package index, and the same code runs here and there.
"""

from __future__ import annotations

import faulthandler
import os
import sys

_record = None
_timeout_s = 0.0
_stderr = None


def pytest_configure(config):
    global _record, _timeout_s, _stderr
    path = os.environ.get("LST_STEP_RECORD")
    _record = open(path, "a") if path else None
    _timeout_s = float(os.environ.get("LST_TEST_TIMEOUT_S", "0") or 0)
    if _timeout_s > 0:  # a descriptor of the real stderr, not the one pytest captures into while a test runs
        _stderr = open(os.dup(sys.__stderr__.fileno()), "w")


def _write(word: str, nodeid: str) -> None:
    if _record is not None:
        _record.write(f"{word} {nodeid}\n")
        _record.flush()
        os.fsync(_record.fileno())


def pytest_runtest_logstart(nodeid, location):
    _write("start", nodeid)
    if _timeout_s > 0:
        faulthandler.dump_traceback_later(_timeout_s, exit=True, file=_stderr)


def pytest_runtest_logfinish(nodeid, location):
    if _timeout_s > 0:
        faulthandler.cancel_dump_traceback_later()
    _write("done", nodeid)
