"""The flags that several subcommands share, and the one way each is read back.

The flags of the LST settings and of the evaluation's configuration are made from their dataclasses'
fields (lst_fast.walk.settings), with the fields' help text and defaults: a subcommand gets them with
`add_settings_arguments(parser, fields, defaults)` and reads them back with
`settings_from_arguments(args, base, fields)`, a checked LSTSettings.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import typing
from typing import Any, Dict, Iterable, Optional, Sequence, Union

import torch

from lst_fast.distributed import DEFAULT_JOIN_TIMEOUT_S, JOIN_TIMEOUT_LIMIT_S
from lst_fast.evaluation.config import EvalConfig
from lst_fast.evaluation.limits import (
    BATCH_LIMIT,
    DIGITS_LIMIT,
    NUM_SAMPLES_LIMIT,
    RESAMPLES_LIMIT,
    RESAMPLES_MINIMUM,
    ROUNDS_LIMIT,
    SEED_LIMIT,
    SIDE_LIMIT,
    SIMPLEX_POINTS_LIMIT,
    SIMPLEX_SUBSETS_LIMIT,
    TRIANGLE_N_LIMIT,
    WORKERS_LIMIT,
)
from lst_fast.run_environment import RunEnvironment
from lst_fast.walk.settings import LSTSettings

# The LST settings each subcommand offers as flags (the other LSTSettings fields keep the base's value).
WALK_FIELDS = ("iterations", "step_size", "threshold", "adv_step_size", "precision")
# eval and leaderboard also offer --graph, which is read into the RunEnvironment (how they run), not into
# the evaluation's settings (what they compute).
EVAL_LST_FIELDS = WALK_FIELDS + ("graph",)
# `run` passes these to lst_fast.traverse; bounds, mean, std and the recording take several numbers and
# are flags of their own there.
RUN_LST_FIELDS = WALK_FIELDS + ("init_noise", "batch_size", "compile_model", "graph", "backend")
# The evaluation's own fields (EvalConfig) that `eval` offers; the model's three are shared with run and bench.
MODEL_FIELDS = ("model", "checkpoint", "pretrained")
EVAL_OWN_FIELDS = MODEL_FIELDS + ("data", "rounds", "num_samples", "min_confidence", "chunk_size", "seed", "triangle_n")


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def add_dataclass_arguments(parser: argparse.ArgumentParser, defaults: Any, names: Sequence[str]) -> None:
    """One flag per named field of the dataclass instance `defaults`: `--step-size` for step_size, with
    the field's help text, type and choices, and the default shown. A boolean field that defaults to
    False becomes a switch (`--graph`); one that defaults to True, a `--no-...` switch."""
    fields = {f.name: f for f in dataclasses.fields(defaults)}
    hints = typing.get_type_hints(type(defaults))
    for name in names:
        f, default = fields[name], getattr(defaults, name)
        hint = hints[name]
        text = f.metadata.get("help", "")
        if hint is bool:
            # A switch is off unless given (its dest's default would read backwards for --no-...).
            if default:
                parser.add_argument(
                    _flag("no_" + name),
                    dest=name,
                    action="store_false",
                    help=f.metadata.get("negated", f"not: {text}") + " (default: off)",
                )
            else:
                parser.add_argument(_flag(name), dest=name, action="store_true", help=text + " (default: off)")
            continue
        kind = next((t for t in typing.get_args(hint) if t is not type(None)), hint)
        parser.add_argument(
            _flag(name),
            dest=name,
            type=_PARSERS.get(name, kind),
            default=default,
            choices=f.metadata.get("choices"),
            help=f"{text} (default: %(default)s)",
        )


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    """--model, --checkpoint, --no-pretrained and --model-dir, as `lst-fast eval` has them (read back as
    args.model, args.checkpoint, args.pretrained, args.model_dir)."""
    add_dataclass_arguments(parser, EvalConfig(), MODEL_FIELDS)
    add_model_dir_argument(parser)


def model_keywords(args: argparse.Namespace) -> Dict[str, Any]:
    """The flags of add_model_arguments but --model, as the keywords lst_fast.models.resolve_model takes."""
    return values(args, ("checkpoint", "pretrained", "model_dir"))


def add_model_dir_argument(parser: argparse.ArgumentParser) -> None:
    """--model-dir, read back with args.model_dir (None: RobustBench's default, ./models)."""
    parser.add_argument(
        "--model-dir",
        default=None,
        metavar="DIR",
        help="robustbench: models: RobustBench's checkpoint folder, which holds "
        "DATASET/THREAT/NAME.pt (default: ./models)",
    )


def add_trust_folder_code_argument(parser: argparse.ArgumentParser) -> None:
    """--trust-folder-code, read back as args.trust_folder_code (site and report)."""
    parser.add_argument(
        "--trust-folder-code",
        action="store_true",
        help="load a py:MODULE:FUNCTION model that a folder's config.json names, which runs that code; only for "
        "folders you trust (default: off, the parts that need such a model are left out, with a note)",
    )


def add_data_root_argument(parser: argparse.ArgumentParser) -> None:
    """--data-root DIR, read back as args.data_root (eval, report and leaderboard)."""
    parser.add_argument("--data-root", default=None, help="folder with the data set's files")


def add_join_timeout_argument(parser: argparse.ArgumentParser) -> None:
    """--join-timeout SECONDS, read back as args.join_timeout (eval and leaderboard under torchrun)."""
    help_text = (
        "under torchrun: how long each process waits for the others to join its group before it stops, saying so"
    )
    parser.add_argument(
        "--join-timeout",
        type=join_seconds,
        default=DEFAULT_JOIN_TIMEOUT_S,
        metavar="SECONDS",
        help=help_text,
    )


def add_simplex_arguments(parser: argparse.ArgumentParser) -> None:
    """--simplex-points N and --simplex-subsets S (eval and leaderboard), read back by simplex_settings."""
    parser.add_argument(
        "--simplex-points",
        type=bounded_int(0, SIMPLEX_POINTS_LIMIT),
        default=0,
        metavar="N",
        help="also measure the k-simplices (source + k LST outputs, k = 2 .. rounds) at N uniform Dirichlet "
        "points each: their fraction above p_src - d, one table row per k (default: 0, off)",
    )
    parser.add_argument(
        "--simplex-subsets",
        type=bounded_int(0, SIMPLEX_SUBSETS_LIMIT),
        default=0,
        metavar="S",
        help="k-simplices per k and source: a seeded choice of S of the C(rounds, k) subsets of the rounds "
        "(default: 0, all of them)",
    )


def simplex_settings(args: argparse.Namespace):
    """The SimplexSettings of --simplex-points and --simplex-subsets, or None when off (checked by the run)."""
    from lst_fast.evaluation.simplices import SimplexSettings

    if args.simplex_points == 0 and args.simplex_subsets == 0:
        return None
    return SimplexSettings(points=args.simplex_points, subsets=args.simplex_subsets)


def add_progress_argument(parser: argparse.ArgumentParser) -> None:
    """--no-progress, read back as args.no_progress (run_environment turns it into RunEnvironment.progress)."""
    parser.add_argument("--no-progress", action="store_true", help="no progress bars (default: shown)")


def add_workers_argument(parser: argparse.ArgumentParser) -> None:
    """--workers N, read back as args.workers (None: the pool module's default)."""
    parser.add_argument(
        "--workers",
        type=WORKERS,
        default=None,
        metavar="N",
        help="processes that decode image files for the pool (default: min(4, CPU cores) for image files, "
        "0 for in-memory data sets)",
    )


def add_settings_arguments(
    parser: argparse.ArgumentParser, fields: Sequence[str] = WALK_FIELDS, defaults: Optional[LSTSettings] = None
) -> None:
    """Flags for the named LSTSettings fields, with `defaults`' values (default: LSTSettings()) as their
    defaults."""
    add_dataclass_arguments(parser, LSTSettings() if defaults is None else defaults, fields)


def settings_from_arguments(
    args: argparse.Namespace, base: Optional[LSTSettings] = None, fields: Optional[Iterable[str]] = None
) -> LSTSettings:
    """`base` (default: LSTSettings()) with the named LSTSettings fields (default: all) that `args`
    holds; checked."""
    names = (f.name for f in dataclasses.fields(LSTSettings)) if fields is None else fields
    return (LSTSettings() if base is None else base).replace(**values(args, names))


def run_environment(args: argparse.Namespace, device: Union[str, torch.device]) -> RunEnvironment:
    """The one RunEnvironment of a command: `device` (the process group's) and the flags of where and how
    it runs that the subcommand offers (the others keep their defaults)."""
    given = {name: getattr(args, name, None) for name in ("data_root", "model_dir", "workers", "batch_size", "graph")}
    given = {name: value for name, value in given.items() if value is not None}
    return RunEnvironment(device=device, progress=not getattr(args, "no_progress", False), **given)


def values(args: argparse.Namespace, names: Iterable[str]) -> Dict[str, Any]:
    """The named flags' values that `args` holds, by field name."""
    return {name: getattr(args, name) for name in names if hasattr(args, name)}


def add_device_argument(parser: argparse.ArgumentParser) -> None:
    """--device (default auto), read back with args.device; lst_fast.cli.main replaces auto by the device
    it picks (pick_device) before the command runs, and sets args.device_auto."""
    parser.add_argument(
        "--device",
        default="auto",
        type=_device,
        help="auto (cuda when torch sees a GPU, else cpu), cpu, cuda or cuda:N",
    )
    parser.set_defaults(device_auto=False)


def _device(text: str) -> str:
    """--device's value as given, once lst_fast.walk.validation.check_device accepts it and, for a CUDA device,
    torch sees that GPU (or it is auto): a missing GPU is named before anything runs."""
    from lst_fast.walk.validation import check_device

    if text != "auto":
        try:
            check_device(text, "the device")
        except ValueError as error:
            raise argparse.ArgumentTypeError(str(error)) from None
    return text


def bounded_int(low: int, high: Optional[int] = None):
    """An argparse type: an integer in [low, high] (high None: no upper bound), else a usage error naming
    the range, when the flag is parsed."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < low or (high is not None and value > high):
            wanted = f">= {low}" if high is None else f"in [{low}, {high}]"
            raise argparse.ArgumentTypeError(f"expected an integer {wanted}, got {value}")
        return value

    parse.__name__ = "integer"
    return parse


def _number(text: str, ok, expected: str) -> float:
    """`text` as a float for which ok(value) holds, else a usage error saying what was `expected`."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}") from None
    if not ok(value):
        raise argparse.ArgumentTypeError(f"expected {expected}, got {text}")
    return value


def join_seconds(text: str) -> float:
    """An argparse type: a number of seconds in (0, a week] (lst_fast.distributed.JOIN_TIMEOUT_LIMIT_S)."""
    return _number(
        text, lambda v: 0 < v <= JOIN_TIMEOUT_LIMIT_S, f"a number of seconds in (0, {JOIN_TIMEOUT_LIMIT_S:g}]"
    )


def unit_interval(text: str) -> float:
    """An argparse type: a number in [0, 1)."""
    return _number(text, lambda v: 0 <= v < 1, "a number in [0, 1)")


def finite_number(text: str) -> float:
    """An argparse type: a number that is neither NaN nor infinite (an image range, a mean)."""
    return _number(text, math.isfinite, "a finite number")


def positive_number(text: str) -> float:
    """An argparse type: a finite number > 0 (a standard deviation)."""
    return _number(text, lambda v: math.isfinite(v) and v > 0, "a finite number > 0")


def non_negative_number(text: str) -> float:
    """An argparse type: a finite number >= 0 (a threshold, a step that may be off)."""
    return _number(text, lambda v: math.isfinite(v) and v >= 0, "a finite number >= 0")


# The ranges of the flags that several subcommands share (checked when parsed).
SEED = bounded_int(0, SEED_LIMIT - 1)
DIGITS = bounded_int(0, DIGITS_LIMIT)
WORKERS = bounded_int(0, WORKERS_LIMIT)
RESAMPLES = bounded_int(RESAMPLES_MINIMUM, RESAMPLES_LIMIT)
POSITIVE = bounded_int(1)
COUNT = bounded_int(0)  # a class index, a number of figures or iterations (0 allowed)
SIDE = bounded_int(1, SIDE_LIMIT)  # an image's height and width in pixels
# the counts whose cost grows with their value (lst_fast.evaluation.limits)
ROUNDS = bounded_int(1, ROUNDS_LIMIT)
NUM_SAMPLES = bounded_int(1, NUM_SAMPLES_LIMIT)
BATCH = bounded_int(1, BATCH_LIMIT)
TRIANGLE_N = bounded_int(1, TRIANGLE_N_LIMIT)


def require_device(text: str) -> None:
    """EnvironmentFault (one line) when `text` names a CUDA device torch does not see: checked before the
    command runs (not when parsed, so a command line can be parsed on any machine)."""
    import torch

    from lst_fast.errors import EnvironmentFault

    parsed = torch.device(text)
    if parsed.type == "cuda":
        if not torch.cuda.is_available():
            raise EnvironmentFault(f"--device {text}: torch sees no CUDA GPU on this machine; use --device cpu")
        count = torch.cuda.device_count()
        if parsed.index is not None and parsed.index >= count:
            raise EnvironmentFault(
                f"--device {text}: this machine has {count} CUDA device(s), cuda:0 to cuda:{count - 1}"
            )


def pick_device() -> str:
    """What --device auto means on this machine: cuda when torch sees a GPU, else cpu."""
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def print_backend(device: str, auto: bool = False) -> None:
    """The first output line of the commands that compute: which implementation runs on `device`, and,
    when `auto`, that --device auto picked it."""
    from lst_fast.backends._extension import backend_info

    info = backend_info()
    kind = "cuda" if str(device).startswith("cuda") else "cpu"
    if info[kind] == "native":
        what = "compiled kernels"
    else:
        why = info["extension_error"] or f"no compiled {kind} kernels"
        what = f"pure-PyTorch fallback ({why})"
    picked = f" (--device auto: torch sees {'a GPU' if kind == 'cuda' else 'no GPU'})" if auto else ""
    print(f"lst_fast {info['lst_fast']}, torch {info['torch']}: {what} on {device}{picked}", flush=True)


# Dataclass flags whose values are range-checked when parsed (the dataclasses check them again).
_PARSERS = {
    "seed": SEED,
    "rounds": ROUNDS,
    "num_samples": NUM_SAMPLES,
    "chunk_size": BATCH,
    "triangle_n": TRIANGLE_N,
    "iterations": COUNT,
    "batch_size": BATCH,
    "min_confidence": unit_interval,
    # the LST settings' numbers, with the ranges LSTSettings checks
    "step_size": positive_number,
    "threshold": non_negative_number,
    "adv_step_size": non_negative_number,
    "init_noise": non_negative_number,
}
