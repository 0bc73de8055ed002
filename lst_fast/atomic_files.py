"""Files written whole or not at all: each write goes to a temporary name beside the file, then is renamed
into place, so a killed process or a full disk never leaves a partial file, and the file that was there
before stays as it was until the rename. TraversalResult.save, the evaluation store, the demo, the
figures and the bench files all write through here.

A write that fails for lack of space or permission raises one RuntimeError naming the file and the
cause ("cannot write OUT/x.png: the disk is full"), with the OSError as its __cause__; the temporary file
is removed. `read_json` reads such a JSON file back: one DataError naming the file when it is truncated
or not JSON.
"""

from __future__ import annotations

import errno
import json
import math
import os
import re
import tempfile
from pathlib import Path
from typing import Any, Callable, Dict, Mapping, Optional, Union

from torch import Tensor

from lst_fast.errors import DataError, EnvironmentFault

__all__ = ["atomic_save_tensors", "atomic_write", "atomic_write_text", "read_json"]

PathLike = Union[str, os.PathLike]

# safetensors reports an I/O failure as SafetensorError("... (os error 28)"), not as an OSError.
_OS_ERROR_NUMBER = re.compile(r"\(os error (\d+)\)")


def atomic_write(path: PathLike, write: Callable[[str], object], advice: str = "") -> Path:
    """Call `write(temporary name)`, then rename the temporary file to `path`; return `path`.

    On an OSError (or a safetensors I/O error) raise EnvironmentFault("cannot write PATH: CAUSE[; advice]"),
    with the temporary file removed and any file already at `path` unchanged. Other errors pass through
    (after the same cleanup)."""
    path = Path(path)
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        os.close(fd)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes it private; these are ordinary files
        write(tmp)
        os.replace(tmp, path)  # the one rename: tests/kill_at_write.py interrupts runs around it
    except BaseException as error:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
        cause = _as_os_error(error)
        if cause is None:
            raise
        reason = "the disk is full" if cause.errno == errno.ENOSPC else (cause.strerror or str(cause))
        raise EnvironmentFault(f"cannot write {path}: {reason}" + (f"; {advice}" if advice else "")) from cause
    return path


def atomic_write_text(path: PathLike, text: str, advice: str = "") -> Path:
    """Write `text` (UTF-8) to `path` atomically (see atomic_write)."""
    return atomic_write(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"), advice)


def atomic_save_tensors(
    tensors: Mapping[str, Tensor], path: PathLike, metadata: Optional[Dict[str, str]] = None, advice: str = ""
) -> Path:
    """Save tensors as safetensors (copied to the CPU, contiguous) to `path` atomically (see atomic_write).
    Tensors that share memory (a view of another, as a trace may be of the images) are saved as copies:
    safetensors refuses shared memory."""
    from safetensors.torch import save_file

    return atomic_write(path, lambda tmp: save_file(_unshared(tensors), tmp, metadata=metadata), advice)


def _unshared(tensors: Mapping[str, Tensor]) -> Dict[str, Tensor]:
    """The tensors on the CPU, contiguous, none sharing its storage with another (copies where they did)."""
    out: Dict[str, Tensor] = {}
    seen = set()
    for name, tensor in tensors.items():
        t = tensor.detach().contiguous().cpu()
        storage = t.untyped_storage().data_ptr()
        if storage in seen and t.numel():
            t = t.clone()
        seen.add(t.untyped_storage().data_ptr())
        out[name] = t
    return out


def _as_os_error(error: BaseException) -> Optional[OSError]:
    """The OSError behind a failed write: the error itself, or one rebuilt from a safetensors I/O error's
    "(os error N)" (chained to it); None for any other error."""
    if isinstance(error, OSError):
        return error
    if type(error).__name__ == "SafetensorError":
        found = _OS_ERROR_NUMBER.search(str(error))
        if found:
            number = int(found.group(1))
            rebuilt = OSError(number, os.strerror(number))
            rebuilt.__cause__ = error
            return rebuilt
    return None


def standard_json(value: Any, indent: Optional[int] = None, compact: bool = False) -> str:
    """`value` as JSON text that every parser reads: NaN and +-Infinity (no value) are written as null
    (Python's json would write the non-standard tokens NaN and Infinity); `compact`: no spaces."""
    separators = (",", ":") if compact else None
    return json.dumps(finite_or_none(value), indent=indent, separators=separators, allow_nan=False)


def finite_or_none(value: Any) -> Any:
    """`value` with every NaN and +-Infinity float (no value) replaced by None, also inside dicts, lists
    and tuples: what JSON can hold."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: finite_or_none(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite_or_none(v) for v in value]
    return value


def read_json(path: Path, rewrite: str) -> Any:
    """The content of a JSON file lst_fast wrote, or one DataError naming the file when it cannot be parsed
    (truncated, not JSON, not UTF-8); `rewrite`: the command that writes it again."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        message = f"{path} is not readable JSON (truncated? {error}); run {rewrite} again to rewrite it"
        raise DataError(message) from error
