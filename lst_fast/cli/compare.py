"""`lst-fast compare DIR...`: finished evaluations side by side (lst_fast.evaluation.compare writes the tables and
figures)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from lst_fast.cli import arguments

HELP = "side-by-side tables and figures of finished evaluations"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("dirs", nargs="+", metavar="DIR", help="finished `lst-fast eval` output folders")
    parser.add_argument("--out", default="lst_compare", help="output folder")
    parser.add_argument("--digits", type=arguments.DIGITS, default=3, help="decimals in the tables")
    parser.add_argument(
        "--labels",
        nargs="+",
        default=None,
        help="row names, one per DIR (default: the model, with the folder name where models repeat)",
    )
    # the verdict matrix (lst_fast.evaluation.verdicts) runs every model on the others' outputs
    arguments.add_data_root_argument(parser)
    arguments.add_device_argument(parser)


def command(args: argparse.Namespace) -> int:
    from lst_fast.evaluation.compare import write_comparison

    written = write_comparison(args.dirs, args.out, digits=args.digits, labels=args.labels)
    print((Path(args.out) / "table1.md").read_text())
    print((Path(args.out) / "table2.md").read_text())
    note = json.loads((Path(args.out) / "compare.json").read_text())["shared_pool"]
    print(note["text"])
    from lst_fast.evaluation.verdict_compare import compare_verdicts

    matrix, verdict_text = compare_verdicts(
        args.dirs, args.out, args.labels, args.digits, device=args.device, data_root=args.data_root
    )
    print(verdict_text)
    if matrix is not None:
        written += [Path(args.out) / f"verdicts.{suffix}" for suffix in ("md", "tex", "csv", "json", "png")]
    print(f"wrote {', '.join(p.name for p in written)} in {args.out}")
    return 0
