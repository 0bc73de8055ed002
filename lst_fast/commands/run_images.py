"""Level Set Traversal between the user's own image files (what `lst-fast run` calls).

Sources and targets are files, folders or glob patterns, paired in order (one source or one target pairs
with every file of the other side) or every source with every target. Images are resized and cropped
with the model's own preprocessing (timm's data config for timm models) and walked in [0, 1] image
space; the model's mean/std goes to `traverse`. Writes to OUT: the LST outputs as PNGs at the model's
input size (images/), a path strip per pair (paths/, the first --figures pairs), the linear-path figure,
summary.md / summary.json and the result file (result.safetensors, TraversalResult.load reads it).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import lst_fast
from lst_fast import plots
from lst_fast.atomic_files import atomic_write_text, standard_json
from lst_fast.commands import image_files
from lst_fast.errors import InputError
from lst_fast.geometry import linear_path_confidence
from lst_fast.metrics import distances
from lst_fast.run_environment import DEFAULT_ENVIRONMENT, RunEnvironment
from lst_fast.walk.settings import LSTSettings


def make_pairs(n_sources: int, n_targets: int, pairing: str) -> List[Tuple[int, int]]:
    """(source index, target index) per walk."""
    if pairing == "all":
        return [(i, j) for i in range(n_sources) for j in range(n_targets)]
    if pairing != "in-order":
        raise InputError(f"pairing must be 'in-order' or 'all', got {pairing!r}")
    if n_sources == n_targets:
        return [(i, i) for i in range(n_sources)]
    if n_targets == 1:
        return [(i, 0) for i in range(n_sources)]
    if n_sources == 1:
        return [(0, j) for j in range(n_targets)]
    raise InputError(
        f"{n_sources} sources and {n_targets} targets cannot be paired in order; give as many of "
        "each (or one on a side), or --pairing all"
    )


def _labels(source_label: Optional[Sequence[int]], n_files: int, num_classes: int):
    if source_label is None:
        return None
    if len(source_label) not in (1, n_files):
        raise InputError(f"--source-label takes one class or one per source file ({n_files}), got {len(source_label)}")
    for c in source_label:
        if not 0 <= c < num_classes:
            raise InputError(f"source label {c} is not a class of this model (0..{num_classes - 1})")
    return list(source_label) * (n_files if len(source_label) == 1 else 1)


# The per-pair numbers that the summary averages.
MEAN_KEYS = (
    "initial_confidence",
    "confidence",
    "still_source",
    "accepted_steps",
    "rms_to_target_start",
    "rms_to_target",
    "l2_to_target",
    "linf_to_target",
    "ssim_to_target",
    "linear_path_min_confidence",
)


@dataclass
class _Pairs:
    """The image files, which source walks toward which target, and the walk's inputs on the device."""

    source_files: List[Path]
    target_files: List[Path]
    pairs: List[Tuple[int, int]]
    xs: Any = None  # (pairs, C, H, W) sources
    xt: Any = None  # their targets
    label: Any = None  # the class to hold per pair, or None for the model's prediction
    target_class: Any = None  # the model's prediction on each target


@dataclass(frozen=True)
class RunOptions:
    """What `run_images` computes (built by lst_fast/cli/run.py from its flags).

    model_spec, checkpoint, pretrained: the model, as lst_fast.models.resolve_model takes it.
    sources, targets: image files or folders; pairing: how they pair ("in-order", ...).
    out: the output folder. settings: the LST settings (None: LSTSettings()). seed: seeds the initial noise.
    source_label: the sources' classes (None: the model's predictions). input_size: height and width (None:
    the model's own). figures: path figures to draw.
    """

    model_spec: str
    sources: Sequence[str]
    targets: Sequence[str]
    out: Union[str, Path] = "lst_run"
    settings: Optional[LSTSettings] = None
    seed: int = 0
    pairing: str = "in-order"
    source_label: Optional[Sequence[int]] = None
    checkpoint: Optional[str] = None
    pretrained: bool = True
    input_size: Optional[int] = None
    figures: int = 10


def run_images(options: RunOptions, env: RunEnvironment = DEFAULT_ENVIRONMENT, **overrides) -> dict:
    """LST from each source image file toward its target image file on `env.device` (a RobustBench model
    from `env.model_dir`, progress bars if `env.progress`); write the output folder's files; return the
    numbers (also in OUT/summary.json).

    Keywords override single fields of `options.settings` (`run_images(options, iterations=100)`). Where the
    settings have no mean/std, the model's own (its descriptor's) are applied inside the walk."""
    import torch

    from lst_fast.models import resolve_model

    model_spec, seed, pairing, figures = options.model_spec, options.seed, options.pairing, options.figures
    t0 = time.time()
    settings = LSTSettings.from_keywords(options.settings, **overrides)
    out = Path(options.out)
    found = _find_pairs(options.sources, options.targets, pairing)
    if figures < 0:
        raise InputError(f"--figures must be >= 0, got {figures}")
    _make_output_folder(out)
    device = torch.device(env.device)
    described = resolve_model(
        model_spec, device, pretrained=options.pretrained, checkpoint=options.checkpoint, model_dir=env.model_dir
    )
    # The settings' mean/std, else the model's; replace() checks them against the input's channels.
    described = described.replace(mean=settings.mean or described.mean, std=settings.std or described.std)
    settings = settings.replace(mean=described.mean, std=described.std)
    pre = (
        described.preprocessing if options.input_size is None else described.preprocessing.with_size(options.input_size)
    )
    described = _load_inputs(found, described, pre, options.source_label, device)

    t_walk = time.time()
    result = lst_fast.traverse(
        described.module,
        found.xs,
        found.xt,
        settings.replace(record_device="cpu", progress=env.progress),
        label=found.label,
        target_label=found.target_class,
        generator=torch.Generator(device=device).manual_seed(seed),
    )
    walk_seconds = time.time() - t_walk
    line = linear_path_confidence(
        described.module, found.xs, result.images, result.label, steps=21, mean=settings.mean, std=settings.std
    )
    rows = _pair_rows(found, result, described, line, out)
    figure_files = _write_figures(found, result, described, line, figures, out)
    result.save(out / "result.safetensors")

    numbers = {
        "model": model_spec,
        "checkpoint": options.checkpoint,
        "pretrained": options.pretrained,
        "preprocessing": pre.to_dict(),
        "pairing": pairing,
        **_run_numbers(settings, seed, device, walk_seconds, rows),
    }
    numbers["total_seconds"] = round(time.time() - t0, 2)
    atomic_write_text(out / "summary.json", standard_json(numbers, indent=1))
    atomic_write_text(
        out / "summary.md", summary_markdown(numbers, {k: p.relative_to(out) for k, p in figure_files.items()})
    )
    return numbers


def _run_numbers(settings: LSTSettings, seed: int, device, walk_seconds: float, rows: List[dict]) -> dict:
    """The summary's settings, backend and timing, the per-pair rows and their means."""
    return {
        "settings": {**settings.config(), "seed": seed},
        "backend": lst_fast.backend_info()["cpu" if device.type == "cpu" else "cuda"],
        "device": str(device),
        "walk_seconds": round(walk_seconds, 2),
        "mean": {k: sum(float(r[k]) for r in rows) / len(rows) for k in MEAN_KEYS},
        "pairs": rows,
    }


def _find_pairs(sources: Sequence[str], targets: Sequence[str], pairing: str) -> _Pairs:
    source_files = image_files.collect_images(sources, "source")
    target_files = image_files.collect_images(targets, "target")
    return _Pairs(source_files, target_files, make_pairs(len(source_files), len(target_files), pairing))


def _make_output_folder(out: Path) -> None:
    """OUT/images, made only once the input is known to be there: a failed start leaves nothing behind."""
    try:
        (out / "images").mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise InputError(f"cannot write the output folder {out}: {error.strerror or error}") from error


def _load_inputs(found: _Pairs, described, pre, source_label: Optional[Sequence[int]], device):
    """Fill in `found`'s images, labels and target classes; return the descriptor, without class names
    that do not fit the model's number of classes."""
    import torch

    xs_files = image_files.load_images(found.source_files, pre).to(device)
    xt_files = image_files.load_images(found.target_files, pre).to(device)
    model = described.classifier()  # for the plain forward passes; traverse applies mean/std itself
    with torch.no_grad():
        src_logits, tgt_logits = model(xs_files), model(xt_files)
    num_classes = src_logits.shape[1]
    if described.class_names is not None and len(described.class_names) != num_classes:
        described = described.replace(class_names=None)
    labels = _labels(source_label, len(found.source_files), num_classes)
    src_idx = torch.tensor([i for i, _ in found.pairs], dtype=torch.long, device=device)
    tgt_idx = torch.tensor([j for _, j in found.pairs], dtype=torch.long, device=device)
    found.xs, found.xt = xs_files[src_idx], xt_files[tgt_idx]
    found.label = None if labels is None else torch.tensor(labels, device=device)[src_idx]
    found.target_class = tgt_logits.argmax(1)[tgt_idx]
    return described


def _pair_rows(found: _Pairs, result, described, line, out: Path) -> List[dict]:
    """Write each pair's LST output as a PNG; return its row of numbers."""
    import torch

    with torch.no_grad():
        final_class = described.classifier()(result.images).argmax(1)
    start, end = distances(found.xs, found.xt), distances(result.images, found.xt)
    name_of = lambda t: described.class_name(int(t))  # noqa: E731
    rows = []
    for k, (i, j) in enumerate(found.pairs):
        source, target = found.source_files[i], found.target_files[j]
        name = f"{k:03d}_{source.stem}_to_{target.stem}.png"
        image_files.save_png(result.images[k], out / "images" / name)
        rows.append(
            {
                "output": f"images/{name}",
                "source": str(source),
                "target": str(target),
                "label": int(result.label[k]),
                "label_name": name_of(result.label[k]),
                "target_class": int(found.target_class[k]),
                "target_class_name": name_of(found.target_class[k]),
                "source_correct": bool(result.source_correct[k]),
                "initial_confidence": float(result.initial_confidence[k]),
                "confidence": float(result.confidence[k]),
                "still_source": bool(final_class[k] == result.label[k]),
                "final_class_name": name_of(final_class[k]),
                "accepted_steps": int(result.accepted_steps[k]),
                "rms_to_target_start": float(start["rms"][k]),
                "rms_to_target": float(end["rms"][k]),
                "l2_to_target": float(end["l2"][k]),
                "linf_to_target": float(end["linf"][k]),
                "ssim_to_target": float(end["ssim"][k]),
                "linear_path_min_confidence": float(line[k].min()),
            }
        )
    return rows


def _write_figures(found: _Pairs, result, described, line, figures: int, out: Path) -> Dict[str, Path]:
    """The path strips of the first `figures` pairs (when the walk was recorded) and the linear paths."""
    figure_files = {}
    xs, xt = found.xs.cpu(), found.xt.cpu()
    if result.trace_images is not None and figures > 0:
        (out / "paths").mkdir(exist_ok=True)
        for k in range(min(figures, len(found.pairs))):
            shown = (int(result.label[k]), int(found.target_class[k]))
            classes = {c: described.class_name(c) for c in shown}
            path = out / "paths" / f"{k:03d}.png"
            plots.path_strip(result, k, xs[k], xt[k], classes=classes, pair=shown, path=path)
            figure_files[f"path of pair {k}"] = path
    figure_files["linear path"] = plots.linear_paths(line.cpu(), out / "linear_path.png")
    return figure_files


def summary_markdown(n: dict, figures: Dict[str, Path]) -> str:
    s = n["settings"]
    m = n["mean"]
    settings = ", ".join(
        f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in s.items() if k not in ("record_every",)
    )
    lines = [
        f"# lst-fast run: model `{n['model']}`",
        "",
        f"{len(n['pairs'])} pairs ({n['pairing']}); input {'x'.join(map(str, n['preprocessing']['input_size']))}, "
        f"{n['preprocessing']['interpolation']} resize, crop {n['preprocessing']['crop_pct']:g} "
        f"({n['preprocessing']['crop_mode']}). Settings: {settings}. Backend: {n['backend']} on {n['device']}. "
        f"LST took {n['walk_seconds']} s, everything {n['total_seconds']} s.",
        "",
        f"Means: RMS to target {m['rms_to_target_start']:.4f} -> {m['rms_to_target']:.4f}, SSIM "
        f"{m['ssim_to_target']:.3f}, source-class confidence {m['initial_confidence']:.4f} -> {m['confidence']:.4f}, "
        f"still the source class {m['still_source']:.0%}, accepted steps {m['accepted_steps']:.1f} of "
        f"{s['iterations']}, minimum confidence on the line source -> output {m['linear_path_min_confidence']:.4f}.",
        "",
        "| # | output | source | target | held class | p0 -> p | still source | accepted | RMS start -> end | l_inf "
        "| SSIM | min p on line |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for k, r in enumerate(n["pairs"]):
        lines.append(
            f"| {k} | [{Path(r['output']).name}]({r['output']}) | {Path(r['source']).name} | {Path(r['target']).name} "
            f"({r['target_class_name']}) | {r['label']} {r['label_name']}"
            f"{'' if r['source_correct'] else ' (not the prediction)'} | "
            f"{r['initial_confidence']:.4f} -> {r['confidence']:.4f} | "
            f"{'yes' if r['still_source'] else 'no: ' + r['final_class_name']} | "
            f"{r['accepted_steps']} | {r['rms_to_target_start']:.4f} -> {r['rms_to_target']:.4f} | "
            f"{r['linf_to_target']:.4f} | {r['ssim_to_target']:.3f} | {r['linear_path_min_confidence']:.4f} |"
        )
    lines.append("")
    for name, path in figures.items():
        lines += [f"## {name}", "", f"![{name}]({path.as_posix()})", ""]
    return "\n".join(lines)
