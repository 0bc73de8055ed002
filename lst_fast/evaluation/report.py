"""A Markdown report of a finished evaluation (its tables and figures), for `lst-fast report DIR`. The
figures of the model's forwards (linear paths, width) need the model: a folder that names a py: model (the
user's code) gets them only when the caller trusts it (lst_fast.evaluation.folder_models); otherwise the
report leaves them out and says so."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import torch

from lst_fast import plots
from lst_fast.atomic_files import atomic_write_text
from lst_fast.data.sources import open_image_set
from lst_fast.evaluation.folder_models import data_without_model, untrusted_model
from lst_fast.evaluation.store import EvaluationStore
from lst_fast.geometry import linear_path_confidence, triangle_weights, width_profile

__all__ = ["write_report"]


def write_report(
    out_dir,
    data_root: Optional[str] = None,
    pairs: int = 8,
    device="cpu",
    model_dir: Optional[str] = None,
    trust_folder_code: bool = False,
) -> Path:
    """Render OUT/report.md from an evaluation folder written by `lst-fast eval` (model_dir: RobustBench's
    checkpoint folder, for robustbench: models). trust_folder_code: load a py: model the folder names (its
    code runs); else its report leaves out the figures that need the model."""
    from lst_fast.models import resolve_model

    store = EvaluationStore(out_dir)
    out = store.root
    store.require_finished()
    cfg = store.read_config()
    left_out = untrusted_model(cfg.model, store.config_path, trust_folder_code)
    model = None
    if left_out is None:
        described = resolve_model(
            cfg.model, device, pretrained=cfg.pretrained, checkpoint=cfg.checkpoint, model_dir=model_dir
        )
        model = described.classifier()
        data = open_image_set(cfg.data, data_root, described.preprocessing)
    else:
        data = data_without_model(cfg.data, data_root, left_out)
    first = store.read_chunk(0, 0)
    k = min(pairs, first["source"].numel())
    src, tgt = first["source"][:k], first["target"][:k]
    xs, xt, outputs = data.get(src), data.get(tgt), first["images"][:k]
    label = data.labels[src]

    figures = {
        "pairs": plots.pair_strips(xs, outputs, xt, confidence=first["confidence"][:k], path=out / "report_pairs.png")
    }
    if model is not None:
        line = linear_path_confidence(model, xs.to(device), outputs.to(device), label.to(device), steps=21).cpu()
        figures["linear paths"] = plots.linear_paths(line, out / "report_linear_path.png")
    if store.has_triangles(0, 1, cfg):
        second = store.read_chunk(1, 0)
        m = min(3, k, second["images"].shape[0])
        conf = store.read_triangles(0, 1)[:m]
        figures["triangles"] = plots.triangle_maps(
            conf,
            triangle_weights(cfg.triangle_n),
            xs[:m],
            outputs[:m],
            ends2=second["images"][:m],
            path=out / "report_triangles.png",
        )
    if model is not None:
        width = width_profile(
            model,
            outputs.to(device),
            (outputs - xs).to(device),
            label.to(device),
            list(plots.WIDTH_RADII),
            k=plots.WIDTH_DIRECTIONS,
            generator=torch.Generator(device=device).manual_seed(cfg.seed),
        )
        figures["width"] = plots.width_bands(
            width["radii"], width["low"].cpu(), width["high"].cpu(), out / "report_width.png"
        )

    text = [store.read_tables_markdown(), ""]
    if left_out is not None:
        text += [f"Left out: the linear-path and width figures (they run the model): {left_out}.", ""]
    captions = {
        "pairs": "Round 0: source, LST output (source-class confidence under it), target.",
        "linear paths": "Confidence along (1 - t) source + t output for the pairs above.",
        "triangles": "Confidence over triangles (source, output of round 0, output of round 1).",
        "width": "Width at the outputs: confidence quantiles (5%, 95%) over "
        f"{plots.WIDTH_DIRECTIONS} random directions orthogonal to (output - source), against the radius.",
    }
    for name, path in figures.items():
        text += [f"## {name}", "", captions[name], "", f"![{name}]({path.name})", ""]
    report = out / "report.md"
    atomic_write_text(report, "\n".join(text))
    return report
