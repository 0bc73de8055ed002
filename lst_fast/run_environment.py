"""RunEnvironment: where and how a command runs (device, data and model folders, decoding workers, scan
batch, progress bars, CUDA graphs), built once by the command line and passed down whole, so each value
has one name from the flag to the function that reads it."""

from __future__ import annotations

import dataclasses
from typing import Optional, Union

import torch

DEFAULT_BATCH = 128  # images per decode batch and per forward of a scan


@dataclasses.dataclass(frozen=True)
class RunEnvironment:
    """Where and how a command runs; none of it changes a result.

    device: where the models run ("cpu", "cuda", "cuda:1" or a torch.device).
    data_root: the folder with the data set's files (None: the data set's default).
    model_dir: RobustBench's checkpoint folder (None: ./models).
    workers: processes that decode image files in a scan (None: the pool module's default).
    batch_size: images per decode batch and per forward of a scan (the pool, a model's check of it).
    progress: show progress bars.
    graph: replay each LST iteration from a CUDA graph (same results; CUDA only).
    """

    device: Union[str, torch.device] = "cpu"
    data_root: Optional[str] = None
    model_dir: Optional[str] = None
    workers: Optional[int] = None
    batch_size: int = DEFAULT_BATCH
    progress: bool = True
    graph: bool = False

    def replace(self, **changes) -> "RunEnvironment":
        return dataclasses.replace(self, **changes)


DEFAULT_ENVIRONMENT = RunEnvironment()  # the CPU, the default folders and workers, progress bars on
QUIET_ENVIRONMENT = RunEnvironment(progress=False)  # the same without progress bars
