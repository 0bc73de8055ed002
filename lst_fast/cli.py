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
    demo.add_argument("--precision", choices=["fp32", "bf16"], default="fp32",
                      help="fp32: exact; bf16: the model in bfloat16 (faster, same quality)")
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--out", default="lst_demo")
    demo.add_argument("--no-progress", action="store_true")
    demo.set_defaults(func=_demo)

    ev = sub.add_parser("eval", help="Tables 1 and 2 over a pool of correctly classified images (resumable)")
    ev.add_argument("--model", default="cnn",
                    help="cnn, cnn-robust, vit (shipped), timm:NAME, torchvision:NAME, or an architecture "
                         "(fashion_cnn, fashion_vit, timm:NAME, ...) with --checkpoint")
    ev.add_argument("--checkpoint", default=None, help="weights file: safetensors or a weights-only torch file")
    ev.add_argument("--no-pretrained", action="store_true", help="timm/torchvision: random initialization")
    ev.add_argument("--data", default="fashion-mnist",
                    help="fashion-mnist, fashion-mnist-sample, cifar10:DIR, imagefolder:DIR or tensor:FILE")
    ev.add_argument("--data-root", default=None, help="folder with the data set's files")
    ev.add_argument("--rounds", type=int, default=5)
    ev.add_argument("--num-samples", type=int, default=100)
    ev.add_argument("--min-confidence", type=float, default=None, help="pool: also ask confidence above this")
    ev.add_argument("--iterations", type=int, default=400)
    ev.add_argument("--step-size", type=float, default=5e-2)
    ev.add_argument("--threshold", type=float, default=0.2)
    ev.add_argument("--adv-step-size", type=float, default=2e-3)
    ev.add_argument("--chunk-size", type=int, default=256)
    ev.add_argument("--seed", type=int, default=0)
    ev.add_argument("--precision", choices=["fp32", "bf16"], default="fp32",
                    help="fp32: exact (SPEC section 1); bf16: the model in bfloat16, several times faster")
    ev.add_argument("--graph", action="store_true", help="CUDA: replay each iteration from a CUDA graph")
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
