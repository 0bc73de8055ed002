"""Where a command's time goes: a clock per command, and the stages any code marks on it.

A command runs inside `stage_clock()`; code anywhere marks a stage with `@timed_stage("walks")` on a
function or `with stage("pages"):` around a block. Outside a clock both do nothing but run the code. A stage
inside another counts for itself only (its time is taken out of the outer one), so the stages add up to at
most the command's time, and `lines()` ends with the rest ("other": imports, loading models, writing) and
the total. The command prints them last, the first place to look when a run is slow.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import time
from typing import Callable, Dict, Iterator, List, Optional, TypeVar

__all__ = ["StageClock", "current_clock", "stage", "stage_clock", "timed_stage"]

F = TypeVar("F", bound=Callable)


class StageClock:
    """Seconds per stage, in the order the stages first ran; a stage inside another pauses the outer one."""

    def __init__(self) -> None:
        self.started = time.perf_counter()
        self.seconds: Dict[str, float] = {}
        self._running: List[List] = []  # [name, start] of the open stages, innermost last

    @contextlib.contextmanager
    def stage(self, name: str) -> Iterator[None]:
        now = time.perf_counter()
        if self._running:  # the outer stage pauses
            outer = self._running[-1]
            self.seconds[outer[0]] = self.seconds.get(outer[0], 0.0) + now - outer[1]
        self.seconds.setdefault(name, 0.0)
        self._running.append([name, now])
        try:
            yield
        finally:
            now = time.perf_counter()
            inner = self._running.pop()
            self.seconds[name] += now - inner[1]
            if self._running:
                self._running[-1][1] = now  # the outer stage goes on

    def total(self) -> float:
        return time.perf_counter() - self.started

    def lines(self) -> List[str]:
        """One line per stage and its seconds, then the rest of the command's time and the total."""
        total = self.total()
        width = max([len(name) for name in self.seconds] + [5])
        rows = list(self.seconds.items()) + [("other", max(0.0, total - sum(self.seconds.values())))]
        lines = [f"time {name:<{width}} {seconds:9.2f} s" for name, seconds in rows]
        return lines + [f"time {'total':<{width}} {total:9.2f} s"]


_CLOCK: contextvars.ContextVar[Optional[StageClock]] = contextvars.ContextVar("lst_fast_stage_clock", default=None)


def current_clock() -> Optional[StageClock]:
    """The running command's clock (None outside one)."""
    return _CLOCK.get()


@contextlib.contextmanager
def stage_clock() -> Iterator[StageClock]:
    """A command's clock; inside an open one, that one."""
    outer = _CLOCK.get()
    if outer is not None:
        yield outer
        return
    clock = StageClock()
    token = _CLOCK.set(clock)
    try:
        yield clock
    finally:
        _CLOCK.reset(token)


@contextlib.contextmanager
def stage(name: str) -> Iterator[None]:
    """The block's time, as stage `name` of the running command's clock (nothing outside one)."""
    clock = _CLOCK.get()
    if clock is None:
        yield
        return
    with clock.stage(name):
        yield


def timed_stage(name: str) -> Callable[[F], F]:
    """Decorator: each call of the function is a stage `name` of the running command's clock."""

    def decorate(function: F) -> F:
        @functools.wraps(function)
        def timed(*args, **kwargs):
            with stage(name):
                return function(*args, **kwargs)

        return timed  # type: ignore[return-value]

    return decorate
