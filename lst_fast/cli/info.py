"""`lst-fast info`: which backends (compiled kernels or pure PyTorch) are in use, as JSON."""

from __future__ import annotations

import argparse
import json

HELP = "which backends (compiled kernels or pure PyTorch) are in use"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """`info` takes no flags of its own."""


def command(args: argparse.Namespace) -> int:
    from lst_fast.backends._extension import backend_info

    print(json.dumps(backend_info(), indent=1))
    return 0
