"""Which model a results folder may make a reader load. A folder's files (config.json, leaderboard.json,
pool.json) name the model that produced it; the readers (`lst-fast site`, `lst-fast report`) load that model
for the pages that need its forwards. A `py:MODULE:FUNCTION` model is the user's own code, imported and
called: a folder that names one would run its author's code on whoever opens it, which a folder that is
data must never do. So a reader imports a `py:` model named by a folder only when the user says they trust
the folder (`--trust-folder-code`, `trust_folder_code=True`); otherwise it leaves out what needs the model
and says so. Every other model name loads only weights (safetensors, or torch.load with weights_only)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional, Union

__all__ = ["TRUST_FLAG", "data_without_model", "runs_code", "untrusted_model"]

TRUST_FLAG = "--trust-folder-code"


def runs_code(spec: object) -> bool:
    """True when loading the model `spec` imports and calls Python code (a py: factory)."""
    return isinstance(spec, str) and spec.startswith("py:")


def untrusted_model(spec: str, folder: Union[str, Path], trusted: bool) -> Optional[str]:
    """Why the model `spec` that `folder`'s config.json names is not loaded, in a few words naming the flag
    that loads it; None when it may be loaded (it runs no code, or the user trusts the folder)."""
    if trusted or not runs_code(spec):
        return None
    return (
        f"{folder} names the model {spec}, a py: factory, and loading it would run that code; "
        f"pass {TRUST_FLAG} if you trust the folder and the code it names"
    )


def data_without_model(data_spec: str, data_root: Optional[str], why: str):
    """The data set `data_spec` opened without its model (left out for `why`): only an in-memory one, whose
    images need no resize or crop; InputError for image files, which are read in the model's own."""
    from lst_fast.data.sources import open_image_set
    from lst_fast.errors import InputError

    data = open_image_set(data_spec, data_root)
    if not data.in_memory:
        raise InputError(f"{why} (without it, the images of {data_spec} cannot be read as the model reads them)")
    return data
