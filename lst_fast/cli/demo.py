"""`lst-fast demo`: LST on a shipped Fashion-MNIST model, with figures and a summary."""

from __future__ import annotations

import argparse

from lst_fast.cli import arguments
from lst_fast.walk.settings import EVALUATION_SETTINGS

HELP = "LST on a shipped Fashion-MNIST model, with figures and a summary"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", choices=["cnn", "cnn-robust", "vit"], default="cnn", help="shipped model")
    arguments.add_settings_arguments(parser, arguments.WALK_FIELDS, EVALUATION_SETTINGS)
    arguments.add_device_argument(parser)
    parser.add_argument("--seed", type=arguments.SEED, default=0, help="seed of the initial noise")
    parser.add_argument("--out", default="lst_demo", help="output folder")
    arguments.add_progress_argument(parser)


def command(args: argparse.Namespace) -> int:
    from lst_fast.commands.demo import run_demo

    arguments.print_backend(args.device, args.device_auto)
    numbers = run_demo(
        args.model,
        out=args.out,
        device=args.device,
        progress=not args.no_progress,
        seed=args.seed,
        settings=arguments.settings_from_arguments(args, EVALUATION_SETTINGS, arguments.WALK_FIELDS),
    )
    print(
        f"wrote {args.out}/summary.md, grid.png, path.png, linear_path.png, triangles.png "
        f"in {numbers['total_seconds']} s"
    )
    print(
        f"mean RMS to target {numbers['mean_rms_to_target_start']:.3f} -> {numbers['mean_rms_to_target']:.3f}, "
        f"SSIM {numbers['mean_ssim_to_target']:.3f}, source confidence {numbers['mean_final_confidence']:.3f}, "
        f"still the source class {numbers['fraction_still_source_class']:.0%}"
    )
    return 0
