"""The `lst-fast` command line (also `python -m lst_fast`)."""
from __future__ import annotations

import argparse
import json
import sys
from typing import Optional, Sequence


def _demo(args: argparse.Namespace) -> int:
    from lst_fast.demo import run_demo

    overrides = {k: v for k, v in (("step_size", args.step_size), ("threshold", args.threshold),
                                   ("adv_step_size", args.adv_step_size)) if v is not None}
    numbers = run_demo(args.model, out=args.out, device=args.device, iterations=args.iterations,
                       progress=not args.no_progress, seed=args.seed, **overrides)
    print(f"wrote {args.out}/summary.md, grid.png, path.png, linear_path.png, triangles.png "
          f"in {numbers['total_seconds']} s")
    print(f"mean RMS to target {numbers['mean_rms_to_target_start']:.3f} -> {numbers['mean_rms_to_target']:.3f}, "
          f"SSIM {numbers['mean_ssim_to_target']:.3f}, source confidence {numbers['mean_final_confidence']:.3f}, "
          f"still the source class {numbers['fraction_still_source_class']:.0%}")
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
    demo.add_argument("--iterations", type=int, default=None, help="default 400")
    demo.add_argument("--step-size", type=float, default=None, help="default 0.05")
    demo.add_argument("--threshold", type=float, default=None, help="default 0.2")
    demo.add_argument("--adv-step-size", type=float, default=None, help="default 0.002")
    demo.add_argument("--device", default="cpu")
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--out", default="lst_demo")
    demo.add_argument("--no-progress", action="store_true")
    demo.set_defaults(func=_demo)

    info = sub.add_parser("info", help="which backends (compiled kernels or pure PyTorch) are in use")
    info.set_defaults(func=_info)

    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, FileNotFoundError, RuntimeError) as error:
        print(f"lst-fast {args.command}: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
