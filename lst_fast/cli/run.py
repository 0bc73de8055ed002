"""`lst-fast run`: Level Set Traversal between the user's own images (lst_fast.commands.run_images does the work).

lst-fast run --model timm:resnet50 --source cat.jpg --target dog.jpg --out out/
lst-fast run --model cnn --source 'shirts/*.png' --target shoes/ --pairing all --out out/
"""

from __future__ import annotations

import argparse

from lst_fast.cli import arguments
from lst_fast.walk.settings import LSTSettings, strip_record_every

HELP = "LST between your own images (PNG/JPEG files, folders or patterns)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    arguments.add_model_arguments(parser)  # as `lst-fast eval` has them
    parser.add_argument(
        "--source",
        nargs="+",
        required=True,
        metavar="PATH",
        help="source images: PNG/JPEG files, folders or glob patterns (quote them)",
    )
    parser.add_argument(
        "--target",
        nargs="+",
        required=True,
        metavar="PATH",
        help="target images: PNG/JPEG files, folders or glob patterns (quote them)",
    )
    parser.add_argument(
        "--pairing",
        choices=["in-order", "all"],
        default="in-order",
        help="in-order: i-th source with i-th target (one file on a side pairs with every file "
        "of the other); all: every source with every target",
    )
    parser.add_argument(
        "--source-label",
        type=arguments.COUNT,
        nargs="+",
        default=None,
        metavar="CLASS",
        help="class to hold: one for all sources, or one per source file (default: the "
        "model's prediction on each source)",
    )
    size_help = "image height and width given to the model (default: the model's own)"
    parser.add_argument("--input-size", type=arguments.SIDE, default=None, help=size_help)
    parser.add_argument("--figures", type=arguments.COUNT, default=10, help="path strips for the first N pairs")
    arguments.add_device_argument(parser)
    parser.add_argument("--out", default="lst_run", help="output folder")
    arguments.add_progress_argument(parser)
    add_traverse_arguments(parser)


def add_traverse_arguments(parser: argparse.ArgumentParser) -> None:
    """The settings of lst_fast.traverse as flags (read back by run_settings)."""
    g = parser.add_argument_group("LST settings (those of lst_fast.traverse)")
    arguments.add_settings_arguments(g, arguments.RUN_LST_FIELDS)
    g.add_argument(
        "--bounds",
        type=arguments.finite_number,
        nargs=2,
        metavar=("LO", "HI"),
        default=[0.0, 1.0],
        help="valid image range; every iterate stays inside",
    )
    for name in ("mean", "std"):
        g.add_argument(
            f"--{name}",
            type=arguments.finite_number if name == "mean" else arguments.positive_number,
            nargs="+",
            default=None,
            help=f"per-channel normalization {name} applied inside (default: the model's own)",
        )
    g.add_argument(
        "--record-every",
        type=arguments.COUNT,
        default=None,
        help="record the iterate every N iterations, for the path strips (default: iterations/8; 0: no strips)",
    )
    g.add_argument("--seed", type=arguments.SEED, default=0, help="seed of the initial noise")


def run_settings(args: argparse.Namespace) -> LSTSettings:
    """The LSTSettings of the flags of add_traverse_arguments (the seed stays apart: it seeds the generator
    the caller makes). No --mean/--std leaves mean/std None: run_images then takes the model's own."""
    settings = arguments.settings_from_arguments(args, fields=arguments.RUN_LST_FIELDS)
    record_every = strip_record_every(settings.iterations) if args.record_every is None else args.record_every
    return settings.replace(bounds=tuple(args.bounds), mean=args.mean, std=args.std, record_every=record_every)


def command(args: argparse.Namespace) -> int:
    from lst_fast.commands.run_images import RunOptions, run_images
    from lst_fast.run_environment import RunEnvironment

    arguments.print_backend(args.device, args.device_auto)
    options = RunOptions(
        model_spec=args.model,
        sources=args.source,
        targets=args.target,
        out=args.out,
        settings=run_settings(args),
        seed=args.seed,
        **arguments.values(args, ("pairing", "source_label", "input_size", "figures", "checkpoint", "pretrained")),
    )
    # --batch-size and --graph are the walk's (in the settings), so the environment takes only these
    env = RunEnvironment(device=args.device, model_dir=args.model_dir, progress=not args.no_progress)
    numbers = run_images(options, env)
    print(
        f"wrote {args.out}/summary.md, summary.json, result.safetensors, {len(numbers['pairs'])} LST "
        f"output{'s' if len(numbers['pairs']) != 1 else ''} in images/ and the figures in {numbers['total_seconds']} s"
    )
    m = numbers["mean"]
    print(
        f"{len(numbers['pairs'])} pairs: RMS to target {m['rms_to_target_start']:.3f} -> {m['rms_to_target']:.3f}, "
        f"SSIM {m['ssim_to_target']:.3f}, source confidence {m['initial_confidence']:.3f} -> "
        f"{m['confidence']:.3f}, still the source class {m['still_source']:.0%}, "
        f"accepted steps {m['accepted_steps']:.1f} of {numbers['settings']['iterations']}"
    )
    return 0
