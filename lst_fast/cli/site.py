"""`lst-fast site`: a static HTML site (leaderboard, every walk, models side by side) of a leaderboard folder
or of evaluation folders (lst_fast.website)."""

from __future__ import annotations

import argparse

from lst_fast.cli.arguments import (
    SEED,
    add_data_root_argument,
    add_device_argument,
    add_model_dir_argument,
    add_progress_argument,
    add_trust_folder_code_argument,
    bounded_int,
    run_environment,
)

HELP = "a static HTML site of a finished leaderboard or evaluations: every walk, the models side by side"


def _walk_pages(text: str):
    if text == "all":
        return None
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number >= 0 or 'all', got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a number >= 0 or 'all', got {text!r}")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from lst_fast.website.build import DEFAULT_THUMBNAIL, DEFAULT_WALK_PAGES

    parser.add_argument(
        "dirs", nargs="+", metavar="DIR", help="a `lst-fast leaderboard` folder, or one or more `lst-fast eval` folders"
    )
    parser.add_argument(
        "--out",
        required=True,
        help="the site's folder (OUT/index.html): new, empty, or a site built before (a rebuild reuses its cache)",
    )
    parser.add_argument(
        "--walk-pages",
        type=_walk_pages,
        default=DEFAULT_WALK_PAGES,
        metavar="N",
        help="walks per model with a page of their own: half the most striking, half a seeded sample, or "
        f"'all' (default: {DEFAULT_WALK_PAGES})",
    )
    parser.add_argument(
        "--frames", type=bounded_int(1), default=8, help="frames of a walk's path, about (default: %(default)s)"
    )
    parser.add_argument(
        "--thumbnail",
        type=bounded_int(8),
        default=DEFAULT_THUMBNAIL,
        help="the gallery shows a JPEG thumbnail of images larger than this many pixels (default: %(default)s)",
    )
    parser.add_argument("--seed", type=SEED, default=0, help="seeds the sample of walk pages (default: %(default)s)")
    add_trust_folder_code_argument(parser)
    add_data_root_argument(parser)
    add_model_dir_argument(parser)
    add_device_argument(parser)
    add_progress_argument(parser)


def command(args: argparse.Namespace) -> int:
    from lst_fast.data.decoded import decoded_once
    from lst_fast.stage_times import stage_clock
    from lst_fast.website import SiteOptions, build_site

    options = SiteOptions(args.walk_pages, args.thumbnail, args.frames, args.seed)
    env = run_environment(args, args.device)
    # One decoded copy of the images for every run's pages and one pixel digest per run (lst_fast.data.decoded).
    with stage_clock() as clock, decoded_once():
        index = build_site(args.dirs, args.out, options, env=env, trust_folder_code=args.trust_folder_code)
    print(f"wrote {index} (open it in a browser; the folder {args.out} can be published as it is)")
    print("\n".join(clock.lines()), flush=True)  # where the time went, by stage
    return 0
