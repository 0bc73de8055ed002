"""`lst-fast demo`: Level Set Traversal on a shipped Fashion-MNIST model, offline, in under a minute.

From one image of each class toward one image of every other class (90 pairs), then the paper's
pictures: the image grid, one path, linear-path confidences and triangle confidence maps, with a short
Markdown summary of the numbers.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Callable, Dict, List, Optional, Union

import torch
from torch import Tensor

import lst_fast
from lst_fast.data.fashion_mnist import CLASSES, load_sample, to_float
from lst_fast.errors import EnvironmentFault, InputError
from lst_fast.geometry import linear_path_confidence, triangle_confidence, triangle_weights
from lst_fast.metrics import distances
from lst_fast.models import load_model, model_info
from lst_fast.walk.settings import EVALUATION_SETTINGS, LSTSettings, strip_record_every

# The summary lists these settings.
SUMMARY_SETTINGS = ("step_size", "iterations", "threshold", "adv_step_size", "init_noise", "precision")


def pick_pairs(model: torch.nn.Module, images: Tensor, labels: Tensor):
    """A source and a (different) target image per class, both classified correctly when possible,
    and the 90 (source class, target class) pairs with different classes."""
    with torch.no_grad():
        pred = model(images).argmax(1)
    sources, targets = [], []
    for c in range(len(CLASSES)):
        idx = torch.nonzero(labels == c).flatten()
        good = idx[pred[idx] == c]
        order = torch.cat([good, idx[pred[idx] != c]])
        sources.append(int(order[0]))
        targets.append(int(order[1]))
    pairs = [(i, j) for i in range(len(CLASSES)) for j in range(len(CLASSES)) if i != j]
    return sources, targets, pairs


def run_demo(
    model_name: str = "cnn",
    out: Union[str, Path] = "lst_demo",
    device: Union[str, torch.device] = "cpu",
    settings: Optional[LSTSettings] = None,
    progress: bool = True,
    seed: int = 0,
    **overrides,
) -> Dict[str, float]:
    """Run the demo; write figures and summary.md / summary.json to `out`; return the numbers.

    settings: the LST settings (default EVALUATION_SETTINGS); keywords override single fields
    (`run_demo(iterations=100)`)."""
    t0 = time.time()
    out = Path(out)
    _check_writable(out)
    settings = LSTSettings.from_keywords(settings or EVALUATION_SETTINGS, **overrides)
    device = torch.device(device)
    model = load_model(model_name, device)
    images, labels = load_sample()
    x_all, labels = to_float(images).to(device), labels.to(device)
    sources, targets, pairs = pick_pairs(model, x_all, labels)
    src_idx = torch.tensor([sources[i] for i, _ in pairs], device=device)
    tgt_idx = torch.tensor([targets[j] for _, j in pairs], device=device)
    xs, xt = x_all[src_idx], x_all[tgt_idx]

    generator = torch.Generator(device=device).manual_seed(seed)
    walk = settings.replace(
        record_every=strip_record_every(settings.iterations), record_device="cpu", progress=progress
    )
    result = lst_fast.traverse(model, xs, xt, walk, generator=generator)
    t_lst = time.time() - t0

    numbers = _walk_numbers(model_name, model, xs, xt, result, settings, device, round(t_lst, 2))
    # Linear paths source -> output, and triangles (source, output to target a, output to target b).
    line = linear_path_confidence(model, xs, result.images, result.label, steps=21)
    tri_rows = [k for k, (i, j) in enumerate(pairs) if j == (i + 1) % 10]
    tri_rows2 = [k for k, (i, j) in enumerate(pairs) if j == (i + 2) % 10]
    tri = triangle_confidence(
        model, xs[tri_rows], result.images[tri_rows], result.images[tri_rows2], result.label[tri_rows], n=10
    )
    numbers["mean_linear_path_min_confidence"] = float(line.min(1).values.mean())
    numbers["mean_triangle_confidence"] = float(tri.mean())

    def figures(keep: Callable[[Path], Path]) -> Dict[str, Path]:
        from lst_fast import plots

        xs_c, xt_c, res_c = xs.cpu(), xt.cpu(), result.images.cpu()
        grid_sources = x_all[torch.tensor(sources)].cpu()
        triangles = (tri.cpu()[:3], triangle_weights(10), xs_c[tri_rows][:3], res_c[tri_rows][:3])
        return {
            "grid": keep(
                plots.image_grid(
                    grid_sources,
                    pairs,
                    res_c,
                    confidence=result.confidence.cpu(),
                    classes=CLASSES,
                    path=out / "grid.png",
                )
            ),
            "path": keep(
                plots.path_strip(result, 0, xs_c[0], xt_c[0], classes=CLASSES, pair=pairs[0], path=out / "path.png")
            ),
            "linear_path": keep(plots.linear_paths(line.cpu(), out / "linear_path.png")),
            "triangles": keep(plots.triangle_maps(*triangles, res_c[tri_rows2][:3], out / "triangles.png")),
        }

    _write_files(out, result, figures, numbers, t0)
    return numbers


def _check_writable(out: Path) -> None:
    """Make `out` and write a file there, so that an unwritable folder fails before the walk."""
    try:
        out.mkdir(parents=True, exist_ok=True)
        (out / ".write_test").write_bytes(b"")
        (out / ".write_test").unlink()
    except OSError as error:
        raise InputError(f"cannot write the demo's output folder {out}: {error.strerror or error}") from error


def _walk_numbers(
    model_name: str, model, xs: Tensor, xt: Tensor, result, settings: LSTSettings, device, lst_seconds: float
) -> dict:
    """The summary's numbers of the walk itself: distances, confidences, acceptance, settings, backend."""
    with torch.no_grad():
        final_pred = model(result.images).argmax(1)
    start, end = distances(xs, xt), distances(result.images, xt)
    pairs = len(xs)
    return {
        "model": model_name,
        "model_test_accuracy": model_info(model_name).get("test_accuracy"),
        "pairs": pairs,
        "mean_rms_to_target_start": float(start["rms"].mean()),
        "mean_rms_to_target": float(end["rms"].mean()),
        "mean_linf_to_target": float(end["linf"].mean()),
        "mean_ssim_to_target_start": float(start["ssim"].mean()),
        "mean_ssim_to_target": float(end["ssim"].mean()),
        "mean_initial_confidence": float(result.initial_confidence.mean()),
        "mean_final_confidence": float(result.confidence.mean()),
        "fraction_still_source_class": float((final_pred == result.label).float().mean()),
        "acceptance_rate": float(result.accepted_steps.sum()) / max(1, pairs * settings.iterations),
        "sources_correct": float(result.source_correct.float().mean()),
        "lst_seconds": lst_seconds,
        **{f"setting_{k}": getattr(settings, k) for k in SUMMARY_SETTINGS},
        "backend": lst_fast.backend_info()["cpu" if device.type == "cpu" else "cuda"],
    }


def _write_files(out: Path, result, figures: Callable, numbers: dict, t0: float) -> None:
    """Every file written atomically, the walked result first; a failed write (disk full) raises one
    RuntimeError naming the file and the files already written."""
    from lst_fast.atomic_files import atomic_write_text, standard_json

    written: List[str] = []

    def keep(path: Path) -> Path:
        written.append(Path(path).name)
        return path

    try:
        keep(result.save(out / "result.safetensors"))
        drawn = figures(keep)
        numbers["total_seconds"] = round(time.time() - t0, 2)
        keep(atomic_write_text(out / "summary.json", standard_json(numbers, indent=1)))
        keep(atomic_write_text(out / "summary.md", summary_markdown(numbers, drawn)))
    except RuntimeError as error:
        if not isinstance(error.__cause__, OSError):
            raise
        raise EnvironmentFault(
            f"{error} (the demo is incomplete; written: {', '.join(written) or 'nothing'})"
        ) from error


def summary_markdown(n: Dict[str, float], figures: Dict[str, Path]) -> str:
    rows = [
        ("pairs (source class != target class)", f"{n['pairs']}"),
        ("mean RMS to target: start -> end", f"{n['mean_rms_to_target_start']:.4f} -> {n['mean_rms_to_target']:.4f}"),
        ("mean l_inf to target", f"{n['mean_linf_to_target']:.4f}"),
        (
            "mean SSIM to target: start -> end",
            f"{n['mean_ssim_to_target_start']:.3f} -> {n['mean_ssim_to_target']:.3f}",
        ),
        (
            "mean source-class confidence: start -> end",
            f"{n['mean_initial_confidence']:.4f} -> {n['mean_final_confidence']:.4f}",
        ),
        ("fraction still predicted as the source class", f"{n['fraction_still_source_class']:.1%}"),
        ("accepted steps", f"{n['acceptance_rate']:.1%}"),
        (
            "mean over paths of the minimum confidence on the line source -> output",
            f"{n['mean_linear_path_min_confidence']:.4f}",
        ),
        ("mean confidence over the triangles (66 points each)", f"{n['mean_triangle_confidence']:.4f}"),
    ]
    settings = ", ".join(
        f"{k[8:]}={v:g}" if isinstance(v, (int, float)) else f"{k[8:]}={v}"
        for k, v in n.items()
        if k.startswith("setting_")
    )
    lines = [
        f"# lst_fast demo: model `{n['model']}` (test accuracy {n['model_test_accuracy']})",
        "",
        f"Settings: {settings}. Backend: {n['backend']}. LST took {n['lst_seconds']} s, everything "
        f"{n['total_seconds']} s.",
        "",
        "| measure | value |",
        "|---|---|",
        *[f"| {a} | {b} |" for a, b in rows],
        "",
    ]
    for name, path in figures.items():
        lines += [f"## {name.replace('_', ' ')}", "", f"![{name}]({path.name})", ""]
    return "\n".join(lines)
