"""Each op's argument errors, one after another, printing the message: first through torch.ops.lst_fast
(the checks of lst_fast/backends/op_checks.py), then the compiled kernels' own guards (torch.ops.lst_fast_kernels,
the cases they refuse). A crash here (rather than a RuntimeError) points at the C++ error path. Used by
bench/gpu_check.sh under cuda-gdb."""

import sys

import torch

import lst_fast  # noqa: F401  (loads the ops)

device = sys.argv[1] if len(sys.argv) > 1 else "cpu"
x = torch.rand(2, 1, 4, 4, device=device)
KERNEL_CASES = ("shape", "dtype", "int", "logits", "label", "weights")  # what the C++ guards refuse


def cases(ops):
    step = ops.orthogonal_step
    return {
        "shape": lambda: step(x, torch.rand(2, 1, 4, 5, device=device), x, x.clone(), 0.1, 0.0, 0.0, 1.0),
        "dtype": lambda: step(x, x, x.double(), x.clone(), 0.1, 0.0, 0.0, 1.0),
        "int": lambda: step(x.int(), x.int(), x.int(), x.int(), 0.1, 0.0, 0.0, 1.0),
        "bounds": lambda: step(x, x, x, x.clone(), 0.1, 0.0, 1.0, 0.0),
        "overlap": lambda: step(x, x, x, x, 0.1, 0.0, 0.0, 1.0),
        "adv_step_size": lambda: step(x, x, x, x.clone(), 0.1, -1.5, 0.0, 1.0),
        "step_size": lambda: step(x, x, x, x.clone(), float("nan"), 0.0, 0.0, 1.0),
        "logits": lambda: ops.confidence_accept(
            torch.rand(1, 3, device=device),
            torch.zeros(2, dtype=torch.long, device=device),
            torch.rand(2, device=device),
            0.2,
            x.clone(),
            x.clone(),
            x.clone(),
            x.clone(),
            torch.rand(2, device=device),
        ),
        "label": lambda: ops.confidence_accept(  # int32 labels (out-of-range values are no error)
            torch.rand(2, 3, device=device),
            torch.tensor([0, 1], dtype=torch.int32, device=device),
            torch.rand(2, device=device),
            0.2,
            x.clone(),
            x.clone(),
            x.clone(),
            x.clone(),
            torch.rand(2, device=device),
        ),
        "weights": lambda: ops.simplex_points(torch.rand(2, 3, 4, device=device), torch.rand(5, 2, device=device)),
    }


for namespace in ("lst_fast", "lst_fast_kernels"):
    for name, call in cases(getattr(torch.ops, namespace)).items():
        if namespace == "lst_fast_kernels" and name not in KERNEL_CASES:
            continue
        print(f"{namespace} {name}: ", end="", flush=True)
        try:
            call()
            print("no error!")
        except RuntimeError as error:
            print(str(error).splitlines()[0])
