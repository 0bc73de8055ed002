"""The `lst-fast` command line (also `python -m lst_fast`).

One module per subcommand (demo, eval, report, run, compare, leaderboard, site, bench, info), each with `HELP`,
`add_arguments(parser)` and `command(args) -> exit code`; the flags several of them share are built in
lst_fast.cli.arguments. The work itself is done by library modules (lst_fast.commands.demo, evaluation, report,
run_images, compare, bench, distributed) that the subcommands call. Even `lst-fast --help` loads torch:
`import lst_fast` defines lst_fast's operators in torch and loads their compiled kernels, and the flags
come from the settings dataclasses, whose checks use torch.

Exit codes: 0 done; 1 an error in the input or the environment (one line on stderr; the traceback with
--debug), including an error raised in the user's own model code (py:MODULE:FUNCTION; its traceback in a
file); 2 an unexpected error, most likely a bug in lst_fast (one line naming the file that holds its
traceback); 130 interrupted. Which errors count as expected is decided by their type (lst_fast.errors,
lst_fast.cli.errors).
"""

from __future__ import annotations

import argparse
import sys
from typing import Optional, Sequence

from lst_fast.cli import bench, compare, demo, evaluate, info, leaderboard, report, run, site
from lst_fast.cli.arguments import (
    add_dataclass_arguments,
    add_model_arguments,
    add_settings_arguments,
    pick_device,
    print_backend,
    require_device,
    settings_from_arguments,
)
from lst_fast.cli.errors import is_expected, out_of_memory_text, report_unexpected, report_user_error
from lst_fast.errors import LstFastError, one_line

__all__ = [
    "add_dataclass_arguments",
    "add_model_arguments",
    "add_settings_arguments",
    "build_parser",
    "main",
    "pick_device",
    "print_backend",
    "settings_from_arguments",
]

# The errors whose messages stand on their own on the error line (no type name in front): lst_fast's own
# name what was wrong.
_PLAIN_ERRORS = (LstFastError, ValueError, FileNotFoundError, RuntimeError, OSError)
EXIT_OK, EXIT_ERROR, EXIT_BUG, EXIT_INTERRUPTED = 0, 1, 2, 130
EPILOG = (
    "exit codes: 0 done, 1 error in the input or environment (one line on stderr; --debug shows the "
    "traceback), 2 internal error, most likely a bug in lst_fast (one line naming the file with the "
    "traceback), 130 interrupted"
)
SUBCOMMANDS = {
    "demo": demo,
    "eval": evaluate,
    "report": report,
    "run": run,
    "compare": compare,
    "leaderboard": leaderboard,
    "site": site,
    "bench": bench,
    "info": info,
}


class _Parser(argparse.ArgumentParser):
    """Usage errors: one line on stderr and exit code 1, like every other error (argparse's own: 2)."""

    def error(self, message: str):
        self.exit(EXIT_ERROR, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


class _Help(argparse.ArgumentDefaultsHelpFormatter):
    """Every flag shows its default, unless its help already says it."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if action.required:
            return text + " (required)"
        if "default" in text or action.default is argparse.SUPPRESS or not action.option_strings:
            return text
        return super()._get_help_string(action)


def build_parser() -> argparse.ArgumentParser:
    from lst_fast.version import __version__

    parser = _Parser(
        prog="lst-fast",
        description="Level Set Traversal: blind spots of vision models",
        formatter_class=_Help,
        epilog=EPILOG,
    )
    parser.add_argument("--version", action="version", version=f"lst-fast {__version__}")
    parser.add_argument("--debug", action="store_true", help="on an error, show the traceback")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, module in SUBCOMMANDS.items():
        command = sub.add_parser(name, help=module.HELP, description=module.HELP, formatter_class=_Help, epilog=EPILOG)
        command.add_argument(
            "--debug",
            action="store_true",
            default=argparse.SUPPRESS,
            help="on an error, show the traceback (default: off)",
        )
        module.add_arguments(command)
        command.set_defaults(func=module.command)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        if getattr(args, "device", None) == "auto":
            args.device, args.device_auto = pick_device(), True
        elif getattr(args, "device", None) is not None:
            require_device(args.device)  # a missing GPU is named before anything runs
        return args.func(args)
    except KeyboardInterrupt:
        if args.debug:
            raise
        # Every finished chunk is already on disk (atomic writes); the same command resumes.
        resume = (
            "; finished work is saved, run the same command to resume"
            if args.command in ("eval", "leaderboard")
            else ""
        )
        print(f"lst-fast {args.command}: interrupted{resume}", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as error:  # noqa: BLE001  one line, no traceback, unless --debug
        if args.debug:
            raise
        if not is_expected(error):
            given = sys.argv[1:] if argv is None else argv
            if report_user_error(args.command, error, given):  # raised in the user's own model code
                return EXIT_ERROR
            report_unexpected(args.command, error, given)
            return EXIT_BUG
        text = out_of_memory_text(error) or one_line(error, _PLAIN_ERRORS)
        print(
            f"lst-fast {args.command}: error: {text} (--debug shows the traceback)",
            file=sys.stderr,
        )
        return EXIT_ERROR
