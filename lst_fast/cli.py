"""The `lst-fast` command line (also `python -m lst_fast`).

Exit codes: 0 done, 1 error (one line on stderr; the traceback with --debug), 130 interrupted.
"""
from __future__ import annotations

import argparse
import json
import sys
from typing import Optional, Sequence

EXIT_OK, EXIT_ERROR, EXIT_INTERRUPTED = 0, 1, 130
EPILOG = "exit codes: 0 done, 1 error (one line on stderr; --debug shows the traceback), 130 interrupted"


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
    overrides = {k: v for k, v in (("step_size", args.step_size), ("threshold", args.threshold),
                                   ("adv_step_size", args.adv_step_size)) if v is not None}
    numbers = run_demo(args.model, out=args.out, device=args.device, iterations=args.iterations,
                       progress=not args.no_progress, seed=args.seed, precision=args.precision, **overrides)
    print(f"wrote {args.out}/summary.md, grid.png, path.png, linear_path.png, triangles.png "
          f"in {numbers['total_seconds']} s")
    print(f"mean RMS to target {numbers['mean_rms_to_target_start']:.3f} -> {numbers['mean_rms_to_target']:.3f}, "
          f"SSIM {numbers['mean_ssim_to_target']:.3f}, source confidence {numbers['mean_final_confidence']:.3f}, "
          f"still the source class {numbers['fraction_still_source_class']:.0%}")
    return 0


def _eval(args: argparse.Namespace) -> int:
    import os

    from lst_fast.evaluation import EvalConfig, run_evaluation

    cfg = EvalConfig(model=args.model, checkpoint=args.checkpoint, pretrained=not args.no_pretrained, data=args.data, rounds=args.rounds, num_samples=args.num_samples,
                     min_confidence=args.min_confidence, iterations=args.iterations, step_size=args.step_size,
                     threshold=args.threshold, adv_step_size=args.adv_step_size, chunk_size=args.chunk_size,
                     seed=args.seed, precision=args.precision)
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
                                progress=not args.no_progress, graph=args.graph)
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
    demo.add_argument("--iterations", type=int, default=None, help="steps tried (default: 400)")
    demo.add_argument("--step-size", type=float, default=None, help="eta (default: 0.05)")
    demo.add_argument("--threshold", type=float, default=None, help="delta (default: 0.2)")
    demo.add_argument("--adv-step-size", type=float, default=None, help="eps (default: 0.002)")
    demo.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    demo.add_argument("--precision", choices=["fp32", "bf16"], default="fp32",
                      help="fp32: exact; bf16: the model in bfloat16 (faster, same quality)")
    demo.add_argument("--seed", type=int, default=0, help="seed of the initial noise")
    demo.add_argument("--out", default="lst_demo", help="output folder")
    demo.add_argument("--no-progress", action="store_true", help="no progress bar")
    demo.set_defaults(func=_demo)

    ev = _add_subcommand(sub, "eval", "Tables 1 and 2 over a pool of correctly classified images (resumable)")
    ev.add_argument("--model", default="cnn",
                    help="cnn, cnn-robust, vit (shipped), timm:NAME, torchvision:NAME, or an architecture "
                         "(fashion_cnn, fashion_vit, timm:NAME, ...) with --checkpoint")
    ev.add_argument("--checkpoint", default=None, help="weights file: safetensors or a weights-only torch file")
    ev.add_argument("--no-pretrained", action="store_true", help="timm/torchvision: random initialization")
    ev.add_argument("--data", default="fashion-mnist",
                    help="fashion-mnist, fashion-mnist-sample, cifar10:DIR, imagefolder:DIR or tensor:FILE")
    ev.add_argument("--data-root", default=None, help="folder with the data set's files")
    ev.add_argument("--rounds", type=int, default=5, help="target rounds per source")
    ev.add_argument("--num-samples", type=int, default=100, help="sources in the pool")
    ev.add_argument("--min-confidence", type=float, default=None, help="pool: also ask confidence above this")
    ev.add_argument("--iterations", type=int, default=400, help="steps tried")
    ev.add_argument("--step-size", type=float, default=5e-2, help="eta")
    ev.add_argument("--threshold", type=float, default=0.2, help="delta")
    ev.add_argument("--adv-step-size", type=float, default=2e-3, help="eps")
    ev.add_argument("--chunk-size", type=int, default=256, help="images per result file")
    ev.add_argument("--seed", type=int, default=0, help="seed of the pool, the targets and the noise")
    ev.add_argument("--precision", choices=["fp32", "bf16"], default="fp32",
                    help="fp32: exact; bf16: the model in bfloat16, several times faster")
    ev.add_argument("--graph", action="store_true", help="CUDA: replay each iteration from a CUDA graph")
    ev.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    ev.add_argument("--out", required=True, help="output folder (an unfinished one resumes)")
    ev.add_argument("--no-progress", action="store_true", help="no progress bar")
    ev.set_defaults(func=_eval)

    rep = _add_subcommand(sub, "report", "a Markdown report (tables and figures) of a finished evaluation")
    rep.add_argument("dir", help="an `lst-fast eval` output folder")
    rep.add_argument("--data-root", default=None, help="folder with the data set's files")
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
