"""The targets of the full evaluation (docs/ALGORITHM.md section 3): in each round every source of the pool
gets a target from a seeded random derangement of the pool, restricted to a different class.

(Not to be confused with `lst-fast run --pairing`, which matches the user's source files to target files.)"""

from __future__ import annotations

from typing import List

import torch
from torch import Tensor

from lst_fast.errors import InputError
from lst_fast.evaluation.limits import ROUNDS_LIMIT


def cross_class_derangement(labels: Tensor, generator: torch.Generator, max_tries: int = 100) -> Tensor:
    """target[i] for every i with labels[target[i]] != labels[i] (so also target[i] != i), each pool
    index used exactly once. Raises ValueError when no such derangement exists (one class holds more than
    half of the pool)."""
    labels = labels.flatten().cpu()
    n = labels.numel()
    if n == 0:
        return torch.empty(0, dtype=torch.long)
    largest = int(torch.bincount(labels).max())
    if 2 * largest > n:
        raise InputError(f"no cross-class derangement exists: one class holds {largest} of the {n} pool images")
    for _ in range(max_tries):
        perm = torch.randperm(n, generator=generator)
        # Repair collisions by swapping targets with random partners; accept only a full fix.
        for _ in range(4 * n):
            bad = torch.nonzero(labels[perm] == labels).flatten()
            if bad.numel() == 0:
                return perm
            i = int(bad[torch.randint(bad.numel(), (1,), generator=generator)])
            j = int(torch.randint(n, (1,), generator=generator))
            if labels[perm[j]] != labels[i] and labels[perm[i]] != labels[j]:
                perm[i], perm[j] = perm[j].clone(), perm[i].clone()
    raise InputError(f"could not find a cross-class derangement in {max_tries} tries")


def round_targets(labels: Tensor, rounds: int, seed: int) -> List[Tensor]:
    """One cross-class derangement per round, reproducible from `seed`."""
    if not 1 <= rounds <= ROUNDS_LIMIT:  # a pool file's rounds may be anything its signer wrote
        raise InputError(f"rounds must be in [1, {ROUNDS_LIMIT}], got {rounds}")
    generator = torch.Generator().manual_seed(seed)
    return [cross_class_derangement(labels, generator) for _ in range(rounds)]
