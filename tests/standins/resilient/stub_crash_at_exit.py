"""Stand-in tests for bench/pytest_resilient.py: both pass, then the interpreter crashes at exit."""

import atexit
import os
import signal

atexit.register(lambda: os.kill(os.getpid(), signal.SIGSEGV))


def test_one():
    pass


def test_two():
    pass
