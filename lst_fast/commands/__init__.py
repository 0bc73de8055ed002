"""The logic of the `lst-fast` subcommands that have a module of their own (run, compare, bench): each
module has `add_arguments(parser)` and `command(args) -> exit code`; lst_fast.cli registers them.
Their top-level imports stay light (argparse only) so `lst-fast --help` does not load torch."""
