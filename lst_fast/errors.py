"""lst_fast's own exceptions: what went wrong is named by the type, so `lst-fast` decides its exit code by
type alone (as pip and click do). Each is also the standard type it refines (an InputError is a
ValueError), so callers that catch the standard types keep working.

    LstFastError            the base: an error in what lst_fast was given or where it runs (exit code 1)
      InputError            a wrong value: an argument, a flag, a file's content (also a ValueError)
        DataError           a data or result file that is not what it must be (pool.json, an image file)
        TooFewSources       a model classifies too few of a shared pool's images to be evaluated on it
      InputTypeError        an argument of the wrong type (also a TypeError)
      EnvironmentFault      the machine or its software: a missing GPU, a full disk (also a RuntimeError)
        PeerFailed          under torchrun: another process of the group failed
      MissingDependency     an optional package that is not installed (also an ImportError)
      MissingFile           a file or folder that is not there (also a FileNotFoundError)

Anything else that reaches the command line (a KeyError, an error raised inside torch) is unexpected:
most likely a bug, exit code 2 with the traceback in a file (lst_fast.cli.errors). `one_line` writes any
error as one line of text, for the messages that quote another error (the command line's error line, the
model loaders' "could not load ... (CAUSE)").
"""

from __future__ import annotations

from typing import Tuple, Type

__all__ = [
    "DataError",
    "EnvironmentFault",
    "InputError",
    "InputTypeError",
    "LstFastError",
    "MissingDependency",
    "MissingFile",
    "PeerFailed",
    "TooFewSources",
    "one_line",
]


class LstFastError(Exception):
    """An error in lst_fast's input or environment, with a message that says what and how to fix it."""


class InputError(LstFastError, ValueError):
    """A value given to lst_fast (an argument, a flag, the content of a file) is wrong."""


class DataError(InputError):
    """A data set, pool or result file is not what it must be (names the file)."""


class TooFewSources(InputError):
    """A model classifies too few of a shared pool's images correctly to be evaluated on the pool."""


class InputTypeError(LstFastError, TypeError):
    """An argument of the wrong type."""


class EnvironmentFault(LstFastError, RuntimeError):
    """The machine or its software cannot do what was asked (no such GPU, a file that cannot be written)."""


class PeerFailed(EnvironmentFault):
    """Under torchrun: another process of the group stopped, so this one cannot go on."""


class MissingDependency(LstFastError, ImportError):
    """An optional package that the request needs is not installed."""


class MissingFile(LstFastError, FileNotFoundError):
    """A file or folder lst_fast was pointed at is not there (a data set, a checkpoint, a results folder);
    the message names it and says what was expected there."""


def one_line(error: BaseException, plain: Tuple[Type[BaseException], ...] = ()) -> str:
    """The error's message with its white space folded to single spaces, after its type's name ("KeyError:
    'x'") unless it is one of the `plain` types, whose messages stand on their own; an error without a
    message is its type's name."""
    text = " ".join(str(error).split())
    if not text:
        return type(error).__name__
    return text if isinstance(error, plain) else f"{type(error).__name__}: {text}"
