"""Each native op's argument errors, one after another, printing the message: a crash here (rather
than a RuntimeError) points at the C++ error path. Used by bench/gpu_check.sh under cuda-gdb."""
import sys

import torch

import lst_fast  # noqa: F401  (loads the ops)

device = sys.argv[1] if len(sys.argv) > 1 else "cpu"
x = torch.rand(2, 1, 4, 4, device=device)
step = torch.ops.lst_fast.orthogonal_step
cases = {
    "shape": lambda: step(x, torch.rand(2, 1, 4, 5, device=device), x, x.clone(), 0.1, 0.0, 0.0, 1.0),
    "dtype": lambda: step(x, x, x.double(), x.clone(), 0.1, 0.0, 0.0, 1.0),
    "int": lambda: step(x.int(), x.int(), x.int(), x.int(), 0.1, 0.0, 0.0, 1.0),
    "bounds": lambda: step(x, x, x, x.clone(), 0.1, 0.0, 1.0, 0.0),
    "overlap": lambda: step(x, x, x, x, 0.1, 0.0, 0.0, 1.0),
    "adv_step_size": lambda: step(x, x, x, x.clone(), 0.1, -1.5, 0.0, 1.0),
    "step_size": lambda: step(x, x, x, x.clone(), float("nan"), 0.0, 0.0, 1.0),
    "logits": lambda: torch.ops.lst_fast.confidence_accept(
        torch.rand(1, 3, device=device), torch.zeros(2, dtype=torch.long, device=device),
        torch.rand(2, device=device), 0.2, x.clone(), x.clone(), x.clone(), x.clone(), torch.rand(2, device=device)),
    "label": lambda: torch.ops.lst_fast.confidence_accept(  # int32 labels (out-of-range values are no error)
        torch.rand(2, 3, device=device), torch.tensor([0, 1], dtype=torch.int32, device=device),
        torch.rand(2, device=device), 0.2, x.clone(), x.clone(), x.clone(), x.clone(), torch.rand(2, device=device)),
    "weights": lambda: torch.ops.lst_fast.simplex_points(torch.rand(2, 3, 4, device=device),
                                                         torch.rand(5, 2, device=device)),
}
for name, call in cases.items():
    print(f"{name}: ", end="", flush=True)
    try:
        call()
        print("no error!")
    except RuntimeError as error:
        print(str(error).splitlines()[0])
