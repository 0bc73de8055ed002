"""`lst-fast leaderboard`: several models on one shared pool, evaluated with the paper's settings and ranked
(lst_fast.evaluation.leaderboard; resumable; one process per device under torchrun, like `eval`)."""

from __future__ import annotations

import argparse
import os

from lst_fast.cli import arguments
from lst_fast.distributed import process_group
from lst_fast.evaluation.config import EvalConfig
from lst_fast.walk.settings import EVALUATION_SETTINGS

HELP = "a blind-spot leaderboard: many models on one shared pool, the paper's settings, ranked (resumable)"
# EvalConfig fields the leaderboard offers (the model, data, pool size and min-confidence are its own flags).
OWN_FIELDS = ("rounds", "chunk_size", "seed", "triangle_n")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from lst_fast.evaluation.leaderboard import COLUMNS, DEFAULT_RANK_BY, LEADERBOARD_DEFAULTS, Ranking
    from lst_fast.run_environment import DEFAULT_BATCH

    parser.add_argument(
        "--model",
        dest="models",
        action="extend",
        nargs="+",
        required=True,
        metavar="SPEC",
        help="models to rank, repeated or several at once: any --model of `lst-fast eval` (cnn, cnn-robust, "
        "vit, timm:NAME, torchvision:NAME, robustbench:NAME[:DATASET[:THREAT]], py:MODULE:FUNCTION)",
    )
    parser.add_argument(
        "--data",
        required=True,
        help="one data set for all models: fashion-mnist, fashion-mnist-sample, cifar10:DIR, imagefolder:DIR, "
        "imagenet:ROOT, imagenet-robustbench:ROOT (RobustBench's 5,000 val images), imagenet-list:FILE:ROOT "
        "or tensor:FILE",
    )
    arguments.add_data_root_argument(parser)
    parser.add_argument(
        "--num-samples",
        type=arguments.NUM_SAMPLES,
        default=LEADERBOARD_DEFAULTS["num_samples"],
        help="images in the shared pool (default: %(default)s)",
    )
    parser.add_argument(
        "--min-confidence",
        type=arguments.unit_interval,
        default=LEADERBOARD_DEFAULTS["min_confidence"],
        help="the pool keeps an image only when every model's confidence in its class is above this "
        "(the paper: 0.6; default: %(default)s)",
    )
    defaults = EvalConfig(rounds=LEADERBOARD_DEFAULTS["rounds"])
    arguments.add_dataclass_arguments(parser, defaults, OWN_FIELDS)
    parser.add_argument(
        "--no-pretrained",
        dest="pretrained",
        action="store_false",
        help="timm/torchvision: random initialization (default: off)",
    )
    arguments.add_model_dir_argument(parser)
    arguments.add_settings_arguments(parser, arguments.EVAL_LST_FIELDS, EVALUATION_SETTINGS)
    parser.add_argument(
        "--rank-by",
        default=DEFAULT_RANK_BY,
        type=_rank_column,
        metavar="{" + ",".join(COLUMNS) + ",simplex_kK}",
        help="the column that ranks the models (default: %(default)s, Table 2's fraction of the triangle above "
        "p_src - 0.2, the paper's headline; simplex_kK: the fraction of the K-simplex above p_src - 0.2, with "
        "--simplex-points)",
    )
    arguments.add_simplex_arguments(parser)
    parser.add_argument(
        "--resamples",
        type=arguments.RESAMPLES,
        default=Ranking.resamples,
        help="bootstrap resamples of the source images (default: %(default)s)",
    )
    parser.add_argument(
        "--digits", type=arguments.DIGITS, default=Ranking.digits, help="decimals in the tables (default: %(default)s)"
    )
    arguments.add_workers_argument(parser)
    parser.add_argument(
        "--batch-size",
        type=arguments.BATCH,
        default=DEFAULT_BATCH,
        help="images per batch of the pool's scan (default: %(default)s)",
    )
    arguments.add_device_argument(parser)
    parser.add_argument(
        "--out",
        required=True,
        help="output folder: OUT/pool.json, OUT/MODEL/ per model, OUT/leaderboard.* (an unfinished one resumes)",
    )
    arguments.add_progress_argument(parser)
    arguments.add_join_timeout_argument(parser)


def _rank_column(text: str) -> str:
    """--rank-by's value once it names a column (the k of simplex_kK is checked against --rounds by the run)."""
    from lst_fast.evaluation.leaderboard import COLUMNS
    from lst_fast.evaluation.simplices import is_column

    if text not in COLUMNS and not is_column(text):
        raise argparse.ArgumentTypeError(f"expected one of {', '.join(COLUMNS)} or simplex_kK (K >= 2), got {text!r}")
    return text


def command(args: argparse.Namespace) -> int:
    from lst_fast.evaluation.leaderboard import Ranking, run_leaderboard
    from lst_fast.stage_times import stage_clock

    settings = arguments.settings_from_arguments(args, EVALUATION_SETTINGS, arguments.WALK_FIELDS)
    pool_size = arguments.values(args, ("num_samples", "min_confidence"))
    base = EvalConfig(lst=settings, pretrained=args.pretrained, **arguments.values(args, OWN_FIELDS), **pool_size)
    ranking = Ranking(rank_by=args.rank_by, resamples=args.resamples, digits=args.digits)
    first = int(os.environ.get("RANK", "0")) == 0
    if first:
        arguments.print_backend(args.device, args.device_auto)
    with stage_clock() as clock, process_group(args.device, args.join_timeout) as device:
        env = arguments.run_environment(args, device)
        simplices = arguments.simplex_settings(args)
        board = run_leaderboard(args.models, args.data, args.out, base, ranking=ranking, simplices=simplices, env=env)
    if first:
        print(open(os.path.join(args.out, "leaderboard.md"), encoding="utf-8").read())
        print(f"wrote {args.out}/leaderboard.md, .tex, .csv, .json and .png ({len(board['rows'])} models)")
        print("\n".join(clock.lines()), flush=True)  # where the time went, by stage
    return 0
