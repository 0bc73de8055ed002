"""Runs every CUDA kernel path once (vector and scalar, register-row and chunked rows, every dtype, empty
input) plus short traverse calls, for compute-sanitizer (memcheck, racecheck, initcheck). Exits non-zero
on error.

    compute-sanitizer --tool memcheck --error-exitcode 1 python tests/cuda_sanitizer_probe.py

The CUDA-graph walk is skipped when PYTORCH_NO_CUDA_MEMORY_CACHING=1 (memcheck runs uncached so overruns
inside a cached block show; the uncached allocator refuses allocations during graph capture). It runs in
fp32: bf16 mode turns on cuDNN autotuning, which would time every algorithm under instrumentation.
`--ops-only` skips the traverse calls, for racecheck: the shared-memory hazards it looks for depend on the
kernel and its sizes (every path is in the op calls), not on what runs around it, and cuDNN's kernels of
the walks would take most of racecheck's time.
"""

import os
import sys

import torch

import lst_fast
from lst_fast import ops


def main() -> None:
    info = lst_fast.backend_info()
    if info.get("cuda") != "native":
        raise SystemExit(f"sanitizer probe: the CUDA kernels are not loaded ({info}); nothing to check")
    run_ops()
    if "--ops-only" not in sys.argv[1:]:
        run_traverse(graph=os.environ.get("PYTORCH_NO_CUDA_MEMORY_CACHING") != "1")
    torch.cuda.synchronize()
    print("sanitizer probe: ok")


def run_ops() -> None:
    torch.manual_seed(0)
    dev = "cuda"
    for dtype in (torch.float32, torch.float64, torch.float16, torch.bfloat16):
        for shape in (
            (3, 3, 64, 64),
            (5, 1, 28, 28),
            (2, 3, 5, 7),
            (1, 1, 1, 1),
            (0, 3, 4, 4),
            (2, 70000),
            (2, 3, 224, 224),
        ):
            x, t = torch.rand(shape, device=dev).to(dtype), torch.rand(shape, device=dev).to(dtype)
            g = (torch.randn(shape, device=dev) * 1e-2).to(dtype)
            adv = torch.zeros(shape, device=dev, dtype=dtype)
            cand = ops.orthogonal_step(x, t, g, adv, step_size=0.05, adv_step_size=2e-3, backend="native")
            if shape[0]:
                # an unaligned view exercises the scalar path
                xs, ts, gs = (v.flatten()[1:].contiguous()[: v.numel() - shape[0]] for v in (x, t, g))
                a = torch.zeros_like(xs)
                ops.orthogonal_step(
                    xs.view(shape[0], -1),
                    ts.view(shape[0], -1),
                    gs.view(shape[0], -1),
                    a.view(shape[0], -1),
                    step_size=0.05,
                    adv_step_size=2e-3,
                    backend="native",
                )
            n = shape[0]
            logits = torch.randn(n, 10, device=dev)
            label = torch.randint(0, 10, (n,), device=dev)
            p0 = torch.rand(n, device=dev, dtype=torch.float64)
            conf = torch.zeros(n, device=dev, dtype=torch.float64)
            ops.confidence_accept(logits, label, p0, 0.2, x, cand, g, g.clone(), conf, backend="native")
            verts = torch.rand(max(n, 1), 3, *shape[1:], device=dev).to(dtype)
            ops.simplex_points(verts, torch.rand(7, 3, device=dev), backend="native")


def run_traverse(graph: bool) -> None:
    dev = "cuda"
    model = torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(), torch.nn.Flatten(), torch.nn.Linear(8 * 16 * 16, 10)
    ).to(dev)
    x, y = torch.rand(8, 3, 16, 16, device=dev), torch.rand(8, 3, 16, 16, device=dev)
    lst_fast.traverse(model, x, y, iterations=5)
    if graph:  # 3 eager iterations, one capture, then replays
        lst_fast.traverse(model, x, y, iterations=6, graph=True)


if __name__ == "__main__":
    main()
