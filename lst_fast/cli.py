"""The `lst-fast` command line (also `python -m lst_fast`).

The flags of the LST settings and of the evaluation's configuration are made from their dataclasses'
fields (lst_fast.settings), with the fields' help text and defaults: a new subcommand gets them with
`add_settings_arguments(parser)` and reads them back with `settings_from_arguments(args)`.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import typing
from typing import Any, Dict, Optional, Sequence

from lst_fast.settings import DEMO_SETTINGS, EVALUATION_SETTINGS, EvalConfig, LSTSettings

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
            if default:
                parser.add_argument(_flag("no_" + name), dest=name, action="store_false",
                                    help=f.metadata.get("negated", f"not: {text}"))
            else:
                parser.add_argument(_flag(name), dest=name, action="store_true", help=text)
            continue
        kind = next((t for t in typing.get_args(hints[name]) if t is not type(None)), hints[name])
        parser.add_argument(_flag(name), dest=name, type=kind, default=default, choices=f.metadata.get("choices"),
                            help=f"{text} (default: %(default)s)")


def add_settings_arguments(parser: argparse.ArgumentParser, fields: Sequence[str] = WALK_FIELDS,
                           defaults: LSTSettings = LSTSettings()) -> None:
    """Flags for the named LSTSettings fields, with `defaults`' values as their defaults."""
    add_dataclass_arguments(parser, defaults, fields)


def settings_from_arguments(args: argparse.Namespace, base: LSTSettings = LSTSettings()) -> LSTSettings:
    """`base` with every LSTSettings field that `args` holds (validated)."""
    return base.replace(**_values(args, (f.name for f in dataclasses.fields(LSTSettings))))


def _values(args: argparse.Namespace, names) -> Dict[str, Any]:
    return {name: getattr(args, name) for name in names if hasattr(args, name)}


def _demo(args: argparse.Namespace) -> int:
    from lst_fast.demo import run_demo

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
    if world > 1:  # under torchrun: one process per device (or per CPU share), results merged on disk
        import torch
        import torch.distributed as dist

        if device.startswith("cuda"):
            device = f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}"
            torch.cuda.set_device(device)
        dist.init_process_group(backend="nccl" if device.startswith("cuda") else "gloo")
    try:
        tables = run_evaluation(cfg, args.out, device=device, data_root=args.data_root,
                                progress=not args.no_progress, graph=settings.graph)
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

    print(f"wrote {write_report(args.dir, data_root=args.data_root, device=args.device)}")
    return 0


def _info(args: argparse.Namespace) -> int:
    import lst_fast

    print(json.dumps(lst_fast.backend_info(), indent=1))
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="lst-fast", description="Level Set Traversal: blind spots of vision models")
    sub = parser.add_subparsers(dest="command", required=True)

    demo = sub.add_parser("demo", help="LST on a shipped Fashion-MNIST model, with figures and a summary")
    demo.add_argument("--model", choices=["cnn", "cnn-robust", "vit"], default="cnn")
    add_settings_arguments(demo, WALK_FIELDS, DEMO_SETTINGS)
    demo.add_argument("--device", default="cpu")
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--out", default="lst_demo")
    demo.add_argument("--no-progress", action="store_true")
    demo.set_defaults(func=_demo)

    ev = sub.add_parser("eval", help="Tables 1 and 2 over a pool of correctly classified images (resumable)")
    add_dataclass_arguments(ev, EvalConfig(), EVAL_OWN_FLAGS)
    ev.add_argument("--data-root", default=None, help="folder with the data set's files")
    add_settings_arguments(ev, EVAL_LST_FLAGS, EVALUATION_SETTINGS)
    ev.add_argument("--device", default="cpu")
    ev.add_argument("--out", required=True)
    ev.add_argument("--no-progress", action="store_true")
    ev.set_defaults(func=_eval)

    rep = sub.add_parser("report", help="a Markdown report (tables and figures) of a finished evaluation")
    rep.add_argument("dir")
    rep.add_argument("--data-root", default=None)
    rep.add_argument("--device", default="cpu")
    rep.set_defaults(func=_report)

    info = sub.add_parser("info", help="which backends (compiled kernels or pure PyTorch) are in use")
    info.set_defaults(func=_info)

    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except KeyboardInterrupt:
        # Every finished chunk is already on disk (atomic writes); the same command resumes.
        print(f"lst-fast {args.command}: interrupted; finished work is saved, run the same command to resume",
              file=sys.stderr)
        return 130
    except (ValueError, FileNotFoundError, RuntimeError) as error:
        print(f"lst-fast {args.command}: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
