"""Where an LST walk spends its time: one warm traverse call under torch.profiler, the top operators by
self time on the device that runs them, and the share of lst_fast's own operators.

On CUDA the share is counted over the GPU kernels by their names (our kernels are all named
`orthogonal_step_*`, `confidence_accept_*` or `simplex_points_*`): under graph=True the replayed
iterations call no operator on the host, so counting `lst_fast::` operator events would credit lst_fast
with the eager warm-up iterations only.

    python bench/profile_lst.py --model resnet50 --device cuda --precision bf16 --batch 128 --size 224
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from test_lst_speed import build_model  # noqa: E402

import lst_fast  # noqa: E402

OUR_KERNELS = ("orthogonal_step_", "confidence_accept_", "simplex_points_")


def is_kernel(event) -> bool:
    """A GPU kernel's event (not a host operator, not a memcpy/memset)."""
    device_type = getattr(event, "device_type", None)
    return (
        device_type is not None
        and device_type != torch.autograd.DeviceType.CPU
        and not event.key.startswith(("Memcpy", "Memset"))
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", default="fashion_cnn", choices=["fashion_cnn", "resnet50", "deit_small", "wrn28_10"])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--precision", default="bf16", choices=["fp32", "bf16"])
    parser.add_argument("--batch", type=int, default=200)
    parser.add_argument("--size", type=int, default=28)
    parser.add_argument("--iterations", type=int, default=20)
    parser.add_argument("--graph", action="store_true")
    parser.add_argument("--rows", type=int, default=15)
    args = parser.parse_args()

    channels = 1 if args.model == "fashion_cnn" else 3
    model = build_model(args.model, args.size, args.device)
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(args.batch, channels, args.size, args.size, generator=gen).to(args.device)
    y = torch.rand(args.batch, channels, args.size, args.size, generator=gen).to(args.device)

    def walk():
        lst_fast.traverse(
            model, x, y, iterations=args.iterations, precision=args.precision, graph=args.graph, batch_size=args.batch
        )
        if args.device == "cuda":
            torch.cuda.synchronize()

    walk()  # warm: the working copy, cuDNN autotuning, graph capture
    activities = [torch.profiler.ProfilerActivity.CPU]
    if args.device == "cuda":
        activities.append(torch.profiler.ProfilerActivity.CUDA)
    with torch.profiler.profile(activities=activities) as prof:
        walk()
    averages = prof.key_averages()
    key = "self_device_time_total" if args.device == "cuda" else "self_cpu_time_total"
    if args.device == "cuda":
        # Kernel events only: an operator's self device time repeats the time of the kernels it launched.
        kernels = [e for e in averages if is_kernel(e)]
        total = sum(getattr(e, key, 0) for e in kernels)
        ours = sum(getattr(e, key, 0) for e in kernels if any(k in e.key for k in OUR_KERNELS))
    else:
        total = sum(getattr(e, key, 0) for e in averages)
        ours = sum(getattr(e, key, 0) for e in averages if e.key.startswith("lst_fast::"))
    print(
        f"{args.model} {args.precision} batch {args.batch} {args.size}px, {args.iterations} iterations on "
        f"{args.device}: lst_fast's operators take {ours / max(total, 1):.1%} of the {key.replace('_', ' ')}"
    )
    print(averages.table(sort_by=key, row_limit=args.rows, max_name_column_width=60))


if __name__ == "__main__":
    main()
