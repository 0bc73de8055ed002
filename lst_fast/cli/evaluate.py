"""`lst-fast eval`: Tables 1 and 2 over a pool of correctly classified images (resumable; one process per
device under torchrun); `--pool FILE` takes a shared pool (lst_fast.evaluation.pool)."""

from __future__ import annotations

import argparse
import os

from lst_fast.cli import arguments
from lst_fast.distributed import process_group
from lst_fast.errors import InputError
from lst_fast.evaluation.config import EvalConfig
from lst_fast.walk.settings import EVALUATION_SETTINGS

HELP = "Tables 1 and 2 over a pool of correctly classified images (resumable)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    # The flags whose values a shared pool decides: with --pool they come from the pool, and one given with
    # another value is refused.
    from lst_fast.evaluation.runner import POOL_DECIDES

    arguments.add_dataclass_arguments(parser, EvalConfig(), arguments.EVAL_OWN_FIELDS)
    for action in parser._actions:
        if action.dest in POOL_DECIDES:  # None: not given (the default, or the pool's with --pool)
            shown = action.default
            action.default = None
            action.help = (action.help or "").replace(
                "(default: %(default)s)", f"(default: {shown}; with --pool: the pool's)"
            )
    arguments.add_data_root_argument(parser)
    arguments.add_model_dir_argument(parser)
    arguments.add_settings_arguments(parser, arguments.EVAL_LST_FIELDS, EVALUATION_SETTINGS)
    arguments.add_device_argument(parser)
    parser.add_argument(
        "--pool",
        default=None,
        metavar="FILE",
        help="a shared pool (`lst-fast leaderboard` writes OUT/pool.json): the sources are its images this model "
        "classifies correctly (above its min-confidence), with the pool's targets; --num-samples, "
        "--min-confidence, --seed and --rounds then come from the pool (one given with another value is "
        "refused); --data, when given, is read instead of the pool's recorded spec (a data set that moved) and "
        "its pixels must be the pool's (default: the model's own pool)",
    )
    arguments.add_workers_argument(parser)
    arguments.add_simplex_arguments(parser)
    parser.add_argument("--out", required=True, help="output folder (an unfinished one resumes)")
    parser.add_argument(
        "--restart",
        action="store_true",
        help="discard what an earlier run wrote in --out (config.json, provenance.json, the tables and result "
        "files) and start afresh; without it, a folder of other settings, other weights or other data (by "
        "digest) is refused",
    )
    arguments.add_progress_argument(parser)
    arguments.add_join_timeout_argument(parser)


def command(args: argparse.Namespace) -> int:
    from lst_fast.evaluation.runner import POOL_DECIDES, run_evaluation
    from lst_fast.stage_times import stage_clock

    settings = arguments.settings_from_arguments(args, EVALUATION_SETTINGS, arguments.WALK_FIELDS)
    given = arguments.values(args, POOL_DECIDES)
    pool = None
    if args.pool is not None:
        from lst_fast.evaluation.pool import load_pool
        from lst_fast.evaluation.runner import pool_config, pool_conflicts

        pool = load_pool(args.pool)
        conflicts = pool_conflicts(given, pool)
        if conflicts:
            raise InputError(
                f"--pool {args.pool} decides the sources and targets, and these flags differ from it: "
                f"{'; '.join(conflicts)}; leave them out (the pool's values are used)"
            )
        # the data it is given (a data set that moved), else the pool's; its pixels are checked against the pool's
        given = {**given, "data": given.get("data") or pool.data["spec"]}
    own = {**arguments.values(args, arguments.EVAL_OWN_FIELDS), **{k: v for k, v in given.items() if v is not None}}
    own = {k: v for k, v in own.items() if v is not None or k not in POOL_DECIDES}
    cfg = EvalConfig(lst=settings, **own)
    if pool is not None:
        cfg = pool_config(cfg, pool)
    first = int(os.environ.get("RANK", "0")) == 0
    if first:
        arguments.print_backend(args.device, args.device_auto)
        if pool is not None:
            print(
                f"pool {args.pool}: {len(pool)} images of {pool.data['spec']} made by {', '.join(pool.makers)} "
                f"(digest {pool.digest[:12]})" + (f", read from {cfg.data}" if cfg.data != pool.data["spec"] else ""),
                flush=True,
            )
    with stage_clock() as clock, process_group(args.device, args.join_timeout) as device:
        env = arguments.run_environment(args, device)
        tables = run_evaluation(
            cfg, args.out, env, pool=pool, simplices=arguments.simplex_settings(args), restart=args.restart
        )
    if first:
        print(f"wrote {args.out}/tables.md ({tables['pairs']} pairs)")
        for key in ("table1", "table2"):
            print(key + ": " + ", ".join(f"{k} {m:.4f}±{sd:.4f}" for k, (m, sd) in tables[key].items()))
        for row in tables.get("simplices", {}).get("rows", []):
            mean, sd = row["frac_above_0.2"]
            print(
                f"k={row['k']} simplices: > p_src - 0.2 {mean}±{sd}"
                if mean is None
                else f"k={row['k']} simplices: > p_src - 0.2 {mean:.4f}±{sd:.4f}"
            )
        print("\n".join(clock.lines()), flush=True)  # where the time went, by stage
    return 0
