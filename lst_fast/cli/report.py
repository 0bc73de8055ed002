"""`lst-fast report DIR`: a Markdown report (tables and figures) of a finished evaluation."""

from __future__ import annotations

import argparse

from lst_fast.cli.arguments import (
    add_data_root_argument,
    add_device_argument,
    add_model_dir_argument,
    add_trust_folder_code_argument,
)

HELP = "a Markdown report (tables and figures) of a finished evaluation"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("dir", help="an `lst-fast eval` output folder")
    add_trust_folder_code_argument(parser)
    add_data_root_argument(parser)
    add_model_dir_argument(parser)
    add_device_argument(parser)


def command(args: argparse.Namespace) -> int:
    from lst_fast.evaluation.report import write_report

    path = write_report(
        args.dir,
        data_root=args.data_root,
        device=args.device,
        model_dir=args.model_dir,
        trust_folder_code=args.trust_folder_code,
    )
    print(f"wrote {path}")
    return 0
