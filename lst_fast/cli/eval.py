"""`lst-fast eval`: Tables 1 and 2 over a pool of correctly classified images (resumable; one process per
device under torchrun)."""

from __future__ import annotations

import argparse
import os

from lst_fast.cli.arguments import (
    EVAL_LST_FIELDS,
    EVAL_OWN_FIELDS,
    add_dataclass_arguments,
    add_device_argument,
    add_model_dir_argument,
    add_settings_arguments,
    print_backend,
    settings_from_arguments,
    values,
)
from lst_fast.distributed import DEFAULT_JOIN_TIMEOUT_S, process_group
from lst_fast.evaluation.config import EvalConfig
from lst_fast.settings import EVALUATION_SETTINGS

HELP = "Tables 1 and 2 over a pool of correctly classified images (resumable)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_dataclass_arguments(parser, EvalConfig(), EVAL_OWN_FIELDS)
    parser.add_argument("--data-root", default=None, help="folder with the data set's files")
    add_model_dir_argument(parser)
    add_settings_arguments(parser, EVAL_LST_FIELDS, EVALUATION_SETTINGS)
    add_device_argument(parser)
    parser.add_argument("--out", required=True, help="output folder (an unfinished one resumes)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument(
        "--join-timeout",
        type=float,
        default=DEFAULT_JOIN_TIMEOUT_S,
        metavar="SECONDS",
        help="under torchrun: how long each process waits for the others to join its group before it "
        "stops, saying so (default: %(default)g)",
    )


def command(args: argparse.Namespace) -> int:
    from lst_fast.evaluation.runner import run_evaluation

    settings = settings_from_arguments(args, EVALUATION_SETTINGS, EVAL_LST_FIELDS)
    cfg = EvalConfig(lst=settings.replace(graph=False), **values(args, EVAL_OWN_FIELDS))
    first = int(os.environ.get("RANK", "0")) == 0
    if first:
        print_backend(args.device, args.device_auto)
    with process_group(args.device, args.join_timeout) as device:
        tables = run_evaluation(
            cfg,
            args.out,
            device=device,
            data_root=args.data_root,
            progress=not args.no_progress,
            graph=settings.graph,
            model_dir=args.model_dir,
        )
    if first:
        print(f"wrote {args.out}/tables.md ({tables['pairs']} pairs)")
        for key in ("table1", "table2"):
            print(key + ": " + ", ".join(f"{k} {m:.4f}±{sd:.4f}" for k, (m, sd) in tables[key].items()))
    return 0
