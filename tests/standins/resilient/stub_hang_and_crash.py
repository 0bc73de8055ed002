"""Stand-in tests for bench/pytest_resilient.py (tests/test_gpu_tooling.py runs them through it; the suite
never collects them: the name does not start with test_). One passes, one sleeps past its timeout, one
kills its process with SIGSEGV, one passes after them."""

import os
import signal
import time


def test_passes_first():
    pass


def test_sleeps_past_its_timeout():
    time.sleep(float(os.environ.get("STUB_SLEEP_S", "60")))


def test_kills_itself():
    os.kill(os.getpid(), signal.SIGSEGV)


def test_passes_after():
    pass
