"""Writing safetensors files so that a crash or a kill never leaves a partial one."""
from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Dict, Optional

from torch import Tensor


def atomic_save(tensors: Dict[str, Tensor], path: Path, metadata: Optional[Dict[str, str]] = None) -> Path:
    """Save to a temporary file beside `path`, then rename it into place (atomic on POSIX)."""
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes it private; results are ordinary files
        save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, tmp, metadata=metadata)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path
