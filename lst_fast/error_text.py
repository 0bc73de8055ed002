"""An error as one line of text, for the messages that quote another error (the command line's error line,
the model loaders' "could not load ... (CAUSE)")."""

from __future__ import annotations

from typing import Tuple, Type

__all__ = ["one_line"]


def one_line(error: BaseException, plain: Tuple[Type[BaseException], ...] = ()) -> str:
    """The error's message with its white space folded to single spaces, after its type's name ("KeyError:
    'x'") unless it is one of the `plain` types, whose messages stand on their own; an error without a
    message is its type's name."""
    text = " ".join(str(error).split())
    if not text:
        return type(error).__name__
    return text if isinstance(error, plain) else f"{type(error).__name__}: {text}"
