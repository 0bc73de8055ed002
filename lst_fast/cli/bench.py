"""`lst-fast bench`: LST speed side by side on this machine and model (lst_fast.commands.bench times it)."""

from __future__ import annotations

import argparse

from lst_fast.cli.arguments import (
    BATCH,
    POSITIVE,
    SIDE,
    add_device_argument,
    add_model_arguments,
    print_backend,
    values,
)
from lst_fast.commands.bench import MODES

HELP = "LST speed side by side on this machine: paper loop, one pass, lst_fast"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_model_arguments(parser)  # as `lst-fast eval` has them
    parser.add_argument(
        "--batch-size",
        type=BATCH,
        default=None,
        help="images per batch (default: 200 for 28-32 px models, 8 on the CPU / 128 on a GPU above)",
    )
    parser.add_argument("--image-size", type=SIDE, default=None, help="height and width (default: the model's own)")
    parser.add_argument(
        "--iterations",
        type=POSITIVE,
        default=20,
        help="k: each mode runs k and 3k iterations; the steady rate is their difference",
    )
    parser.add_argument(
        "--repeats", type=POSITIVE, default=3, help="timed runs of each length per mode (after one warm-up run)"
    )
    parser.add_argument(
        "--modes",
        nargs="+",
        choices=MODES,
        default=None,
        help="what to time (default: every mode that applies to the device; graph modes need "
        "CUDA, compile modes torch.compile)",
    )
    add_device_argument(parser)
    parser.add_argument("--out", default=None, help="also write the table as OUT.md and the numbers as OUT.json")


def command(args: argparse.Namespace) -> int:
    from lst_fast.commands.bench import BenchOptions, markdown_table, run_bench, write_bench_files
    from lst_fast.run_environment import RunEnvironment

    print_backend(args.device, args.device_auto)
    timed = values(args, ("checkpoint", "pretrained", "batch_size", "image_size", "iterations", "repeats", "modes"))
    # --batch-size here is the walk's batch (BenchOptions'), not a scan's (RunEnvironment's)
    env = RunEnvironment(device=args.device, model_dir=args.model_dir, progress=False)
    rows = run_bench(BenchOptions(model_spec=args.model, **timed), env, echo=print)
    table = markdown_table(rows)
    print()
    print(table)
    if args.out:
        table_file, numbers_file = write_bench_files(rows, args.out)
        print(f"wrote {table_file} and {numbers_file}")
    return 0
