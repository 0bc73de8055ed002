"""The gate of the GPU run (bench/gpu_check.sh): passes only when the lst_fast that the steps will import
comes from the expected place and has run an operator with its compiled CUDA kernels on this GPU.

    python3 bench/gpu_gate.py EXPECTED_PREFIX

That the kernels are registered is not enough: on its first use of a GPU, lst_fast checks the driver and
the architecture, and on a refusal the ops run the pure-PyTorch fallback, which the speed and bandwidth
rows would then time under the label "native". So the gate runs one op with backend="native" (which
raises where the check refuses), then prints backend_info(), whose cuda_device_checks is empty until an op
has run, and requires a check of this GPU that let the kernels run (None).
"""

from __future__ import annotations

import sys
from typing import Callable, List, Optional, Tuple

import torch

import lst_fast
from lst_fast import ops


def run_one_op(device: torch.device) -> None:
    """One fused step on a tiny batch with the compiled kernels (raises where they may not run)."""
    x, target, adv = (torch.rand(2, 1, 4, 4, device=device) for _ in range(3))
    grad = torch.randn(2, 1, 4, 4, device=device)
    ops.orthogonal_step(x, target, grad, adv, step_size=1e-2, adv_step_size=2e-3, backend="native")
    torch.cuda.synchronize(device)


def gate(
    expected_prefix: str, device: Optional[torch.device] = None, run_op: Callable[[torch.device], None] = run_one_op
) -> Tuple[bool, List[str]]:
    """(passed, the lines to print)."""
    device = device or torch.device("cuda", 0)
    lines = [f"lst_fast from {lst_fast.__file__}"]
    problems = []
    if not lst_fast.__file__.startswith(expected_prefix):
        problems.append(f"lst_fast is not the one under {expected_prefix}")
    try:
        run_op(device)
    except Exception as error:  # the refusal's own words are the diagnosis
        problems.append(f"one op with backend='native' on {device} failed: {error}")
    info = lst_fast.backend_info()
    lines.append(f"backend: {info}")
    checks = info["cuda_device_checks"]
    if info["cuda"] != "native":
        problems.append(f"the CUDA kernels are not loaded ({info['cuda_extension_error']})")
    if str(device) not in checks:
        problems.append(f"no device check of {device} ran (cuda_device_checks: {checks})")
    elif checks[str(device)] is not None:
        problems.append(f"the device check refused {device}: {checks[str(device)]}")
    lines += [f"gate: FAILED, {p}" for p in problems] or [f"gate: ok, the compiled kernels ran on {device}"]
    return not problems, lines


def main() -> int:
    passed, lines = gate(sys.argv[1])
    print("\n".join(lines))
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
