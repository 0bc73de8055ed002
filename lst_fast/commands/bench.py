"""LST speed side by side on this machine and model (what `lst-fast bench` calls).

The paper's two-pass fp32 loop, the one-pass loop (both in lst_fast.commands.baselines, which the repository's
bench/ times too) and lst_fast in each mode that applies to the device, on random images of the model's
input size.

Every call of a loop has a fixed set-up cost (lst_fast: the bf16 copy with its BatchNorm folding and
check, the end check, a graph capture; the baselines: the first forward) besides its per-iteration work,
and on a GPU a short run is mostly set-up. So each mode runs k and 3k iterations (`--iterations` is k),
each --repeats times after one untimed warm-up run (which also compiles), and reports both:
- the steady rate, images x iterations per second from the difference of the two runs
  (batch * 2k / (t_3k - t_k)): what a long run achieves;
- the set-up seconds per call (t_k minus k iterations at the steady rate);
with the spread of the repeats' steady rates and the ratio to the paper loop's steady rate.

Every loop runs under the backend flags of its precision, as lst_fast's own modes do, so a ratio compares
like with like: the fp32 baselines without TF32 (as exact mode), the expert loop with cuDNN autotuning (as
lst-bf16).
"""

from __future__ import annotations

import dataclasses
import statistics
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple, Union

from lst_fast.errors import InputError
from lst_fast.run_environment import DEFAULT_ENVIRONMENT, RunEnvironment

MODES = (
    "paper",
    "one-pass",
    "expert-compile",
    "lst-fp32",
    "lst-bf16",
    "lst-bf16-graph",
    "lst-bf16-compile",
    "lst-bf16-compile-graph",
)
DESCRIPTION = {
    "paper": "paper loop: fp32 (no TF32), two passes per iteration",
    "one-pass": "one pass per iteration, fp32 (no TF32)",
    "expert-compile": "one pass, bf16 autocast + torch.compile (by hand)",
    "lst-fp32": "lst_fast fp32 (exact)",
    "lst-bf16": "lst_fast bf16",
    "lst-bf16-graph": "lst_fast bf16 + CUDA graph",
    "lst-bf16-compile": "lst_fast bf16 + torch.compile",
    "lst-bf16-compile-graph": "lst_fast bf16 + torch.compile + CUDA graph",
}


BACKEND_WORDS = {"native": "compiled kernels", "reference": "pure-PyTorch fallback"}


def default_modes(device_type: str) -> List[str]:
    return [m for m in MODES if "graph" not in m or device_type == "cuda"]


def input_shape(described, image_size: Optional[int]):
    """(C, H, W) of the model's input (its descriptor's), the height and width overridden."""
    pre = described.preprocessing if image_size is None else described.preprocessing.with_size(image_size)
    return pre.input_size


def mode_runner(mode: str, model, device_type: str) -> Callable:
    """The loop of one mode, called as run(model, x, y, iterations) (bench/ times the same ones)."""
    import lst_fast
    from lst_fast.commands.baselines import DELTA, EPS, ETA, make_expert_loop, one_pass_loop, paper_loop

    if mode in ("paper", "one-pass"):
        return _under_flags_of("fp32", paper_loop if mode == "paper" else one_pass_loop)
    if mode == "expert-compile":
        return _under_flags_of("bf16", make_expert_loop(model, device_type))
    precision = "bf16" if "bf16" in mode else "fp32"

    def lst(model_, x, y, iterations):
        return lst_fast.traverse(
            model_,
            x,
            y,
            iterations=iterations,
            step_size=ETA,
            threshold=DELTA,
            adv_step_size=EPS,
            precision=precision,
            graph=mode.endswith("graph"),
            compile_model="compile" in mode,
            batch_size=x.shape[0],
        ).images

    return lst


def _under_flags_of(precision: str, loop: Callable) -> Callable:
    """A baseline under the backend flags lst_fast sets for `precision` (fp32: no TF32 in convolutions and
    matrix products; bf16: cuDNN autotuning), so its ratio to lst_fast's mode of that precision compares
    the same arithmetic and the same choice of convolution algorithms."""
    from lst_fast.walk.runtime import precision_flags

    def run(model, x, y, iterations):
        with precision_flags(precision):
            return loop(model, x, y, iterations)

    return run


def steady_rate(batch: int, iterations: int, short_s: float, long_s: float) -> float:
    """img-iter/s of the work that grows with the iterations: `iterations` (k) and 3k took short_s and
    long_s seconds. NaN when the long run was not longer (too little work to see)."""
    extra = long_s - short_s
    return batch * 2 * iterations / extra if extra > 0 else float("nan")


def setup_seconds(batch: int, iterations: int, short_s: float, long_s: float) -> float:
    """The seconds of a call that do not grow with the iterations: t_k less k iterations at the steady rate."""
    rate = steady_rate(batch, iterations, short_s, long_s)
    return max(0.0, short_s - batch * iterations / rate) if rate == rate else float("nan")


@dataclasses.dataclass(frozen=True)
class BenchOptions:
    """What `run_bench` times (built by lst_fast/cli/bench.py from its flags).

    model_spec, checkpoint, pretrained: the model, as lst_fast.models.resolve_model takes it.
    batch_size: images per walk batch (None: 200 for 28-32 px models, else 128 on CUDA and 8 on the CPU).
    image_size: height and width (None: the model's own).
    iterations: k; each mode runs k and 3k iterations. repeats: timed runs of each length per mode.
    modes: what to time (None: every mode that applies to the device).
    """

    model_spec: str
    checkpoint: Optional[str] = None
    pretrained: bool = True
    batch_size: Optional[int] = None
    image_size: Optional[int] = None
    iterations: int = 20
    repeats: int = 3
    modes: Optional[List[str]] = None


def run_bench(
    options: BenchOptions,
    env: RunEnvironment = DEFAULT_ENVIRONMENT,
    echo: Callable[[str], None] = lambda line: None,
) -> List[Dict[str, object]]:
    """Time each mode on `env.device` (a RobustBench model from `env.model_dir`); return one row per mode
    (img-iter/s median, min, max, ratio to the paper loop)."""
    import torch

    from lst_fast.models import resolve_model

    model_spec, batch_size, iterations, repeats = (
        options.model_spec,
        options.batch_size,
        options.iterations,
        options.repeats,
    )
    device = torch.device(env.device)
    modes = _checked_modes(iterations, repeats, batch_size, options.modes, device)
    torch.manual_seed(0)
    described = resolve_model(
        model_spec, device, pretrained=options.pretrained, checkpoint=options.checkpoint, model_dir=env.model_dir
    )
    model = described.classifier()  # every mode times the same [0, 1]-image module
    c, h, w = input_shape(described, options.image_size)
    if batch_size is None:
        batch_size = 200 if max(h, w) <= 32 else (128 if device.type == "cuda" else 8)
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(batch_size, c, h, w, generator=gen).to(device)
    y = torch.rand(batch_size, c, h, w, generator=gen).to(device)
    echo(
        f"{model_spec}: batch {batch_size} x {c}x{h}x{w}, {iterations} and {3 * iterations} iterations per run, "
        f"{repeats} timed runs of each per mode after one warm-up run, on {device}"
    )
    rows: List[Dict[str, object]] = []
    for mode in modes:
        short, long_ = _time_mode(mode_runner(mode, model, device.type), model, x, y, iterations, repeats, device)
        row = _mode_row(mode, batch_size, iterations, short, long_)
        rows.append(row)
        echo(
            f"  {mode:24s} {row['img_iter_per_s']:12,.1f} img-iter/s steady, set-up {row['setup_s']:.3f} s "
            f"(runs {row['min']:,.1f} - {row['max']:,.1f})"
        )
    paper = next((r["img_iter_per_s"] for r in rows if r["mode"] == "paper"), None)
    context = _context(model_spec, batch_size, [c, h, w], iterations, repeats, device)
    for row in rows:
        row["ratio_to_paper"] = None if paper is None else row["img_iter_per_s"] / paper
        row.update(context)
    return rows


def _checked_modes(iterations: int, repeats: int, batch_size: Optional[int], modes, device) -> List[str]:
    """The modes to time (default: those of the device), after the checks of run_bench's numbers."""
    for name, value in (("iterations", iterations), ("repeats", repeats)):
        if value < 1:
            raise InputError(f"--{name} must be >= 1, got {value}")
    if batch_size is not None and batch_size < 1:
        raise InputError(f"--batch-size must be >= 1, got {batch_size}")
    modes = list(modes) if modes else default_modes(device.type)
    for mode in modes:
        if "graph" in mode and device.type != "cuda":
            raise InputError(f"mode {mode} needs a CUDA device (--device cuda)")
    return modes


def _time_mode(run, model, x, y, iterations: int, repeats: int, device) -> Tuple[List[float], List[float]]:
    """Seconds of `repeats` runs of k and of 3k iterations, after one warm-up run."""
    import torch

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    run(model, x, y, iterations)  # warm-up: compiles, builds lst_fast's working copy, captures graphs
    sync()
    short: List[float] = []
    long_: List[float] = []
    for _ in range(repeats):  # interleaved, so a slow spell of the machine hits both spans alike
        for span, times in ((iterations, short), (3 * iterations, long_)):
            t0 = time.perf_counter()
            run(model, x, y, span)
            sync()
            times.append(time.perf_counter() - t0)
    return short, long_


def _mode_row(mode: str, batch: int, iterations: int, short: List[float], long_: List[float]) -> Dict[str, object]:
    t_short, t_long = statistics.median(short), statistics.median(long_)
    speeds = [steady_rate(batch, iterations, a, b) for a, b in zip(short, long_, strict=True)]
    return {
        "mode": mode,
        "what": DESCRIPTION[mode],
        "img_iter_per_s": steady_rate(batch, iterations, t_short, t_long),
        "setup_s": setup_seconds(batch, iterations, t_short, t_long),
        "per_call_img_iter_per_s": batch * iterations / t_short,
        "min": min(speeds),
        "max": max(speeds),
        "seconds": short,
        "seconds_3x": long_,
    }


def _context(model_spec: str, batch: int, shape: List[int], iterations: int, repeats: int, device) -> Dict[str, object]:
    """What every row records about the run: the model, the sizes, the device, the versions."""
    import torch

    import lst_fast

    info = lst_fast.backend_info()
    return dict(
        model=model_spec,
        batch=batch,
        input=shape,
        iterations=iterations,
        repeats=repeats,
        device=str(device),
        backend=info["cuda" if device.type == "cuda" else "cpu"],
        torch=info["torch"],
        lst_fast=info["lst_fast"],
        threads=torch.get_num_threads(),
    )


def _number(value: float) -> str:
    if value != value:
        return "n/a"
    return f"{value:,.0f}" if value >= 1000 else f"{value:.1f}" if value >= 10 else f"{value:.2f}"


def markdown_table(rows: List[Dict[str, object]]) -> str:
    if not rows:
        return ""
    first = rows[0]
    c, h, w = first["input"]
    k = first["iterations"]
    backend = BACKEND_WORDS.get(first["backend"], first["backend"])
    lines = [
        f"`{first['model']}`, batch {first['batch']} x {c}x{h}x{w}, {first['device']} ({first['threads']} "
        f"threads), {backend}, torch {first['torch']}; steady rate from runs of {k} and {3 * k} iterations "
        f"(median of {first['repeats']} each; range of the runs), set-up: the seconds of a call that do not "
        "grow with the iterations:",
        "",
        "| mode | img-iter/s | range | vs paper loop | set-up s | per call of k |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        ratio = (
            ""
            if r["ratio_to_paper"] is None or r["ratio_to_paper"] != r["ratio_to_paper"]
            else f"{r['ratio_to_paper']:.2f}x"
        )
        setup = "n/a" if r["setup_s"] != r["setup_s"] else f"{r['setup_s']:.3f}"
        lines.append(
            f"| {r['what']} | {_number(r['img_iter_per_s'])} | {_number(r['min'])} - {_number(r['max'])} "
            f"| {ratio} | {setup} | {_number(r['per_call_img_iter_per_s'])} |"
        )
    return "\n".join(lines)


def write_bench_files(rows: List[Dict[str, object]], out: Union[str, Path]) -> Tuple[Path, Path]:
    """OUT.md (the table of markdown_table) and OUT.json (the rows), each written whole (atomic); their
    paths."""
    from lst_fast.atomic_files import atomic_write_text, standard_json

    out = str(out)
    table = atomic_write_text(out + ".md", markdown_table(rows) + "\n")
    numbers = atomic_write_text(out + ".json", standard_json(rows, indent=1))
    return table, numbers
