"""Run `lst-fast` and interrupt it at an exact point of its atomic writes: the kill-mid-write tests'
fault injection, kept here so that production code carries no test hook.

    python tests/kill_at_write.py EVENT:GLOB:COUNT:SIGNAL ARGS...      (ARGS: lst-fast's, e.g. eval --out X)

sends SIGNAL to this process the COUNT-th time EVENT happens to a file whose name matches GLOB. EVENT
"writing": inside an atomic write, before the rename, with the temporary file cut to half its size (a
write interrupted in its middle); "written": right after the rename. The point is found by wrapping the
rename that lst_fast.atomic_files makes (os.replace) in this process only, so no timing is involved.
"""

from __future__ import annotations

import fnmatch
import os
import signal
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def install(spec: str) -> None:
    """Wrap os.replace so that it sends the signal of `spec` at its point."""
    event, pattern, count, name = spec.split(":")
    if event not in ("writing", "written"):
        raise SystemExit(f"kill_at_write: EVENT must be writing or written, got {event!r}")
    sig, wanted, seen = getattr(signal, name), int(count), [0]
    replace = os.replace

    def replace_and_maybe_signal(src, dst, *args, **kwargs):
        hit = fnmatch.fnmatch(Path(dst).name, pattern)
        if hit:
            seen[0] += 1
        if hit and seen[0] == wanted and event == "writing":
            os.truncate(src, os.path.getsize(src) // 2)
            os.kill(os.getpid(), sig)
        replace(src, dst, *args, **kwargs)
        if hit and seen[0] == wanted and event == "written":
            os.kill(os.getpid(), sig)

    os.replace = replace_and_maybe_signal


if __name__ == "__main__":
    install(sys.argv[1])
    from lst_fast.cli import main

    sys.exit(main(sys.argv[2:]))
