"""The row-group design of the fused step (bench/row_groups.py, issue 36 point 5), on the CPU: its group
arithmetic, and that the step on groups of rows gives the whole batch's step bit for bit (each row is
independent), so the GPU run can time it beside the default path knowing it computes the same."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

from lst_fast import ops
from lst_fast.backends._extension import has_native_kernel

_spec = importlib.util.spec_from_file_location("row_groups", Path(__file__).parents[1] / "bench" / "row_groups.py")
row_groups = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(row_groups)


def test_a_group_fits_half_the_l2():
    row = 3 * 224 * 224 * 4  # one fp32 ImageNet row: 602,112 bytes
    h200_l2 = 60 * 2**20
    group = row_groups.rows_per_group(row, h200_l2, 128)
    assert group == 17  # 17 rows x 3 arrays = 30.7 MB <= 31.5 MB, 18 would not fit
    assert 3 * row * group <= h200_l2 // 2 < 3 * row * (group + 1)
    assert row_groups.rows_per_group(row, h200_l2, 8) == 8  # never more than the batch
    assert row_groups.rows_per_group(10**9, h200_l2, 128) == 1  # a row larger than the L2: one at a time
    with pytest.raises(ValueError, match="must be > 0"):
        row_groups.rows_per_group(0, h200_l2, 128)


def test_groups_cover_the_batch_once_in_order():
    bounds = row_groups.group_bounds(128, 17)
    assert [s.start for s in bounds] == list(range(0, 128, 17)) and bounds[-1].stop == 128
    assert sum(s.stop - s.start for s in bounds) == 128


@pytest.mark.parametrize("backend", ["native", "reference"])
def test_the_step_on_row_groups_equals_the_whole_batch_bit_for_bit(backend):
    if backend == "native" and not has_native_kernel("orthogonal_step", "cpu"):
        pytest.skip("no compiled CPU kernel")
    gen = torch.Generator().manual_seed(0)
    shape = (11, 3, 40, 40)
    x, t = torch.rand(shape, generator=gen), torch.rand(shape, generator=gen)
    g = torch.randn(shape, generator=gen) * 1e-2
    adv_whole = torch.randn(shape, generator=gen) * 1e-3
    adv_groups = adv_whole.clone()
    scalars = dict(step_size=1e-2, adv_step_size=2e-3)

    def step(*args, **kw):
        return ops.orthogonal_step(*args, **kw, backend=backend)

    whole = step(x, t, g, adv_whole, **scalars)
    parts = row_groups.grouped_step(step, x, t, g, adv_groups, 4, **scalars)
    assert [p.shape[0] for p in parts] == [4, 4, 3]
    assert torch.equal(torch.cat(parts), whole) and torch.equal(adv_groups, adv_whole)
