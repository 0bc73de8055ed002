"""The `lst-fast` command line (also `python -m lst_fast`).

The flags of the LST settings and of the evaluation's configuration are made from their dataclasses'
fields (lst_fast.settings), with the fields' help text and defaults: a new subcommand gets them with
`add_settings_arguments(parser)` and reads them back with `settings_from_arguments(args)`.

Exit codes: 0 done, 1 error (one line on stderr; the traceback with --debug), 130 interrupted.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import typing
from typing import Any, Dict, Optional, Sequence

from lst_fast.settings import DEMO_SETTINGS, EVALUATION_SETTINGS, EvalConfig, LSTSettings

EXIT_OK, EXIT_ERROR, EXIT_INTERRUPTED = 0, 1, 130
EPILOG = "exit codes: 0 done, 1 error (one line on stderr; --debug shows the traceback), 130 interrupted"

# The LST settings each subcommand offers as flags.
WALK_FIELDS = ("iterations", "step_size", "threshold", "adv_step_size", "precision")
EVAL_LST_FLAGS = WALK_FIELDS + ("graph",)
EVAL_OWN_FLAGS = ("model", "checkpoint", "pretrained", "data", "rounds", "num_samples", "min_confidence",
                  "chunk_size", "seed")


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
        text = f.metadata.get("help", "")
        if hints[name] is bool:
            # A switch is off unless given (its dest's default would read backwards for --no-...).
            if default:
                parser.add_argument(_flag("no_" + name), dest=name, action="store_false",
                                    help=f.metadata.get("negated", f"not: {text}") + " (default: off)")
            else:
                parser.add_argument(_flag(name), dest=name, action="store_true", help=text + " (default: off)")
            continue
        kind = next((t for t in typing.get_args(hints[name]) if t is not type(None)), hints[name])
        parser.add_argument(_flag(name), dest=name, type=kind, default=default, choices=f.metadata.get("choices"),
                            help=f"{text} (default: %(default)s)")


MODEL_FLAGS = ("model", "checkpoint", "pretrained")


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    """--model, --checkpoint, --no-pretrained and --model-dir, as `lst-fast eval` has them (read back as
    args.model, args.checkpoint, args.pretrained, args.model_dir)."""
    add_dataclass_arguments(parser, EvalConfig(), MODEL_FLAGS)
    add_model_dir_argument(parser)


def add_model_dir_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model-dir", default=None, metavar="DIR",
                        help="robustbench: models: RobustBench's checkpoint folder, which holds "
                             "DATASET/THREAT/NAME.pt (default: ./models)")


def add_settings_arguments(parser: argparse.ArgumentParser, fields: Sequence[str] = WALK_FIELDS,
                           defaults: LSTSettings = LSTSettings()) -> None:
    """Flags for the named LSTSettings fields, with `defaults`' values as their defaults."""
    add_dataclass_arguments(parser, defaults, fields)


def settings_from_arguments(args: argparse.Namespace, base: LSTSettings = LSTSettings()) -> LSTSettings:
    """`base` with every LSTSettings field that `args` holds (validated)."""
    return base.replace(**_values(args, (f.name for f in dataclasses.fields(LSTSettings))))


def _values(args: argparse.Namespace, names) -> Dict[str, Any]:
    return {name: getattr(args, name) for name in names if hasattr(args, name)}


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


def print_backend(device: str) -> None:
    """The first output line of the commands that compute: which implementation runs on `device`."""
    import lst_fast

    info = lst_fast.backend_info()
    kind = "cuda" if str(device).startswith("cuda") else "cpu"
    if info[kind] == "native":
        what = "compiled kernels"
    else:
        why = info["extension_error"] or f"no compiled {kind} kernels"
        what = f"pure-PyTorch fallback ({why})"
    print(f"lst_fast {info['lst_fast']}, torch {info['torch']}: {what} on {device}", flush=True)


def _demo(args: argparse.Namespace) -> int:
    from lst_fast.demo import run_demo

    print_backend(args.device)
    numbers = run_demo(args.model, out=args.out, device=args.device, progress=not args.no_progress,
                       seed=args.seed, settings=settings_from_arguments(args, DEMO_SETTINGS))
    print(f"wrote {args.out}/summary.md, grid.png, path.png, linear_path.png, triangles.png "
          f"in {numbers['total_seconds']} s")
    print(f"mean RMS to target {numbers['mean_rms_to_target_start']:.3f} -> {numbers['mean_rms_to_target']:.3f}, "
          f"SSIM {numbers['mean_ssim_to_target']:.3f}, source confidence {numbers['mean_final_confidence']:.3f}, "
          f"still the source class {numbers['fraction_still_source_class']:.0%}")
    return 0


def _eval(args: argparse.Namespace) -> int:
    import os

    from lst_fast.evaluation import run_evaluation

    settings = settings_from_arguments(args, EVALUATION_SETTINGS)
    cfg = EvalConfig(lst=settings.replace(graph=False), **_values(args, EVAL_OWN_FLAGS))
    device, world = args.device, int(os.environ.get("WORLD_SIZE", "1"))
    if int(os.environ.get("RANK", "0")) == 0:
        print_backend(device)
    if world > 1:  # under torchrun: one process per device (or per CPU share), results merged on disk
        import torch
        import torch.distributed as dist

        if device.startswith("cuda"):
            device = f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}"
            torch.cuda.set_device(device)
        dist.init_process_group(backend="nccl" if device.startswith("cuda") else "gloo")
    try:
        tables = run_evaluation(cfg, args.out, device=device, data_root=args.data_root,
                                progress=not args.no_progress, graph=settings.graph, model_dir=args.model_dir)
    finally:
        if world > 1:
            dist.destroy_process_group()
    if int(os.environ.get("RANK", "0")) == 0:
        print(f"wrote {args.out}/tables.md ({tables['pairs']} pairs)")
        for key in ("table1", "table2"):
            print(key + ": " + ", ".join(f"{k} {m:.4f}±{sd:.4f}" for k, (m, sd) in tables[key].items()))
    return 0


def _report(args: argparse.Namespace) -> int:
    from lst_fast.report import write_report

    print(f"wrote {write_report(args.dir, data_root=args.data_root, device=args.device, model_dir=args.model_dir)}")
    return 0


def _info(args: argparse.Namespace) -> int:
    import lst_fast

    print(json.dumps(lst_fast.backend_info(), indent=1))
    return 0


def _add_subcommand(sub, name: str, help: str) -> argparse.ArgumentParser:
    parser = sub.add_parser(name, help=help, description=help, formatter_class=_Help, epilog=EPILOG)
    parser.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                        help="on an error, show the traceback (default: off)")
    return parser


def build_parser() -> argparse.ArgumentParser:
    from lst_fast.commands import bench as bench_command
    from lst_fast.commands import compare as compare_command
    from lst_fast.commands import run as run_command
    from lst_fast.version import __version__

    parser = _Parser(prog="lst-fast", description="Level Set Traversal: blind spots of vision models",
                     formatter_class=_Help, epilog=EPILOG)
    parser.add_argument("--version", action="version", version=f"lst-fast {__version__}")
    parser.add_argument("--debug", action="store_true", help="on an error, show the traceback")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    demo = _add_subcommand(sub, "demo", "LST on a shipped Fashion-MNIST model, with figures and a summary")
    demo.add_argument("--model", choices=["cnn", "cnn-robust", "vit"], default="cnn", help="shipped model")
    add_settings_arguments(demo, WALK_FIELDS, DEMO_SETTINGS)
    demo.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    demo.add_argument("--seed", type=int, default=0, help="seed of the initial noise")
    demo.add_argument("--out", default="lst_demo", help="output folder")
    demo.add_argument("--no-progress", action="store_true", help="no progress bar")
    demo.set_defaults(func=_demo)

    ev = _add_subcommand(sub, "eval", "Tables 1 and 2 over a pool of correctly classified images (resumable)")
    add_dataclass_arguments(ev, EvalConfig(), EVAL_OWN_FLAGS)
    ev.add_argument("--data-root", default=None, help="folder with the data set's files")
    add_model_dir_argument(ev)
    add_settings_arguments(ev, EVAL_LST_FLAGS, EVALUATION_SETTINGS)
    ev.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    ev.add_argument("--out", required=True, help="output folder (an unfinished one resumes)")
    ev.add_argument("--no-progress", action="store_true", help="no progress bar")
    ev.set_defaults(func=_eval)

    rep = _add_subcommand(sub, "report", "a Markdown report (tables and figures) of a finished evaluation")
    rep.add_argument("dir", help="an `lst-fast eval` output folder")
    rep.add_argument("--data-root", default=None, help="folder with the data set's files")
    add_model_dir_argument(rep)
    rep.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    rep.set_defaults(func=_report)

    run = _add_subcommand(sub, "run", "LST between your own images (PNG/JPEG files, folders or patterns)")
    run_command.add_arguments(run)
    run.set_defaults(func=_computing(run_command.command))

    compare = _add_subcommand(sub, "compare", "side-by-side tables and figures of finished evaluations")
    compare_command.add_arguments(compare)
    compare.set_defaults(func=compare_command.command)

    bench = _add_subcommand(sub, "bench", "LST speed side by side on this machine: paper loop, one pass, lst_fast")
    bench_command.add_arguments(bench)
    bench.set_defaults(func=_computing(bench_command.command))

    info = _add_subcommand(sub, "info", "which backends (compiled kernels or pure PyTorch) are in use")
    info.set_defaults(func=_info)
    return parser


def _computing(command):
    """A command that computes: its first output line names the backend."""

    def wrapped(args: argparse.Namespace) -> int:
        print_backend(args.device)
        return command(args)

    return wrapped


def _one_line(error: BaseException) -> str:
    text = " ".join(str(error).split())
    if isinstance(error, (ValueError, FileNotFoundError, RuntimeError, OSError)) or not text:
        return text or type(error).__name__
    return f"{type(error).__name__}: {text}"


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except KeyboardInterrupt:
        if args.debug:
            raise
        # Every finished chunk is already on disk (atomic writes); the same command resumes.
        resume = "; finished work is saved, run the same command to resume" if args.command == "eval" else ""
        print(f"lst-fast {args.command}: interrupted{resume}", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as error:  # noqa: BLE001  one line, no traceback, unless --debug
        if args.debug:
            raise
        print(f"lst-fast {args.command}: error: {_one_line(error)} (--debug shows the traceback)", file=sys.stderr)
        return EXIT_ERROR


if __name__ == "__main__":
    sys.exit(main())
