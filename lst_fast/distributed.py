"""The torchrun process group of `lst-fast eval`: one process per device (or per CPU share), joined for the
run, with a bound on how long a process waits for the others to join.

torch's own bound is the group's collective timeout (30 minutes for gloo, 10 for NCCL), so a group that
cannot form (a process that never starts, a restarted one that cannot connect) would hang that long.
Here the group is made with `join_timeout_s` (default 5 minutes) and proven whole by one barrier; only
then does it get `RUN_TIMEOUT` for the run's own barriers, which wait while other ranks finish their share
(on a slow or shared CPU that can take longer than torch's default 30 minutes).
"""

from __future__ import annotations

import contextlib
import math
import os
from datetime import timedelta
from typing import Iterator, Tuple

from lst_fast.errors import EnvironmentFault, InputError, PeerFailed

__all__ = ["DEFAULT_JOIN_TIMEOUT_S", "JOIN_TIMEOUT_LIMIT_S", "RUN_TIMEOUT", "process_group", "world_size"]

DEFAULT_JOIN_TIMEOUT_S = 300.0
# A week: far beyond any start of a group, and far inside what datetime.timedelta holds (about 8.6e13 s).
JOIN_TIMEOUT_LIMIT_S = 7 * 24 * 3600.0
RUN_TIMEOUT = timedelta(hours=12)  # a rank that finished its share waits at a barrier for the slowest one


def world_size() -> int:
    """The number of processes torchrun started (WORLD_SIZE; 1 outside torchrun)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


@contextlib.contextmanager
def process_group(device: str, join_timeout_s: float = DEFAULT_JOIN_TIMEOUT_S) -> Iterator[str]:
    """Under torchrun (WORLD_SIZE > 1): this process joins the group (NCCL on CUDA, gloo on the CPU) for
    the block and yields its own device (cuda:LOCAL_RANK on CUDA). Outside torchrun it yields `device` as
    is. A group that has not formed within `join_timeout_s` seconds is a RuntimeError saying so."""
    if not (
        isinstance(join_timeout_s, (int, float))
        and math.isfinite(join_timeout_s)
        and 0 < join_timeout_s <= JOIN_TIMEOUT_LIMIT_S
    ):
        raise InputError(
            f"join_timeout_s must be a number of seconds in (0, {JOIN_TIMEOUT_LIMIT_S:g}], got {join_timeout_s!r}"
        )
    if world_size() <= 1:
        yield device
        return
    import torch
    import torch.distributed as dist

    if device.startswith("cuda"):
        device = f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}"
        torch.cuda.set_device(device)
    backend = "nccl" if device.startswith("cuda") else "gloo"
    _join(dist, backend, join_timeout_s)
    try:
        yield device
    finally:
        dist.destroy_process_group()


def _join(dist, backend: str, join_timeout_s: float) -> None:
    """init_process_group and one barrier, both within `join_timeout_s`; then RUN_TIMEOUT."""
    rank, world = os.environ.get("RANK", "?"), world_size()
    where = f"{os.environ.get('MASTER_ADDR', '?')}:{os.environ.get('MASTER_PORT', '?')}"
    try:
        dist.init_process_group(backend=backend, timeout=timedelta(seconds=join_timeout_s))
        dist.barrier()  # every rank is here: the group is whole
    except (RuntimeError, OSError) as error:  # torch's DistError and its timeouts are RuntimeErrors
        if dist.is_initialized():
            dist.destroy_process_group()
        cause = " ".join(str(error).split())[:300]
        raise EnvironmentFault(
            f"rank {rank} of {world}: the {backend} process group at {where} did not form within "
            f"{join_timeout_s:g} s (a process did not start, or could not connect): {cause}; check that "
            "every process was started, or wait longer with --join-timeout"
        ) from error
    set_timeout = getattr(dist, "set_timeout", None)  # public from torch 2.14; before, the private name
    if set_timeout is None:
        from torch.distributed import distributed_c10d

        set_timeout = distributed_c10d._set_pg_timeout
    set_timeout(RUN_TIMEOUT)


def rank_and_world() -> Tuple[int, int]:
    """(rank, world size) of the initialized torch.distributed group, else (0, 1)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def barrier(world: int) -> None:
    """Wait for every process of the group (nothing to wait for in one process). A barrier that fails
    because another process stopped (its connection closed, the collective timed out) is PeerFailed:
    one line saying so, the failed process's own message says why."""
    if world > 1:
        import torch.distributed as dist

        try:
            dist.barrier()
        except RuntimeError as error:  # torch's DistBackendError and DistNetworkError are RuntimeErrors
            cause = " ".join(str(error).split())[:200]
            raise PeerFailed(
                f"rank {dist.get_rank()} of {world}: another process of the group failed or stopped, so this "
                f"one stops too (its own error line says why; here: {cause})"
            ) from error
