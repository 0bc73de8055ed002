"""Figures of the demo, `lst-fast run`, the evaluation's report and `lst-fast compare` (matplotlib, headless).

Every figure is drawn on `pyplot()` and written with `save_figure` (atomically, through lst_fast.atomic_files).
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence, Tuple

import torch
from torch import Tensor

from lst_fast.atomic_files import atomic_write

# The width figures' profile, the report's and the site's walk pages alike: the l2 radii from the output,
# and the random directions orthogonal to (output - source) at each
WIDTH_RADII = (0.0, 0.5, 1.0, 2.0, 4.0, 8.0)
WIDTH_DIRECTIONS = 64


def pyplot():
    """matplotlib.pyplot on the headless Agg backend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, path: Path) -> Path:
    """Write the figure atomically (format from the suffix, png by default), then close it; a failed write
    (disk full) raises RuntimeError naming the file and leaves no partial figure."""
    path = Path(path)
    from matplotlib.layout_engine import PlaceHolderLayoutEngine

    # tight_layout leaves a placeholder engine behind, and savefig then lays out (draws) the figure once more
    # before drawing it (about 10% of a save). Our layouts are done by now.
    if isinstance(fig.get_layout_engine(), PlaceHolderLayoutEngine):
        fig.set_layout_engine(None)
    try:
        return atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=110, format=path.suffix[1:] or "png"))
    finally:
        pyplot().close(fig)


def _show(ax, image: Tensor) -> None:
    img = image.detach().float().cpu()
    if img.shape[0] == 1:
        ax.imshow(img[0].numpy(), cmap="gray", vmin=0, vmax=1)
    else:
        ax.imshow(img.permute(1, 2, 0).clamp(0, 1).numpy())
    ax.set_xticks([])
    ax.set_yticks([])


def _rgb(image: Tensor) -> Tensor:
    """(C, H, W) in [0, 1], one or three channels -> (H, W, 3) on the CPU."""
    img = image.detach().float().cpu().clamp(0, 1)
    return img.expand(3, -1, -1).permute(1, 2, 0) if img.shape[0] == 1 else img.permute(1, 2, 0)


def image_grid(
    sources: Tensor,
    pairs: Sequence[Tuple[int, int]],
    outputs: Tensor,
    confidence: Tensor,
    classes: Sequence[str],
    path: Path,
) -> Path:
    """Rows: target classes; columns: source classes; each cell the LST output with its source-class
    confidence; the originals on the diagonal (as in the paper's figure).

    The cells are pasted into one image drawn on one axes: with an axes per cell the 10 x 10 grid took
    3.1 s to lay out and draw, now 1.5 s (most of it matplotlib's import and the PNG)."""
    plt = pyplot()
    k = len(classes)
    height, width = sources.shape[-2:]
    gap, band = max(1, width // 8), max(4, height // 3)  # between cells; under each for its label
    cell_h, cell_w = height + band, width + gap
    canvas = torch.ones(k * cell_h, k * cell_w - gap, 3)  # white between the images
    labels = {
        (i, j): (image, f"{float(conf):.3f}", "black")
        for (i, j), image, conf in zip(pairs, outputs, confidence, strict=True)
    }
    labels.update({(c, c): (sources[c], "source", "tab:blue") for c in range(k)})
    fig, ax = plt.subplots(figsize=(1.15 * k, 1.3 * k))
    for (col, row), (image, label, color) in labels.items():
        top, left = row * cell_h, col * cell_w
        canvas[top : top + height, left : left + width] = _rgb(image)
        ax.text(left + width / 2, top + height + band / 2, label, fontsize=7, color=color, ha="center", va="center")
    ax.imshow(canvas.numpy(), interpolation="nearest")
    for c in range(k):
        ax.text(c * cell_w + width / 2, -gap, classes[c], fontsize=7, ha="center", va="bottom")
        ax.text(-gap, c * cell_h + height / 2, classes[c], fontsize=7, ha="right", va="center", rotation=90)
    ax.set_axis_off()
    fig.suptitle("LST outputs: columns = source class (held), rows = target image's class", fontsize=9)
    fig.tight_layout()
    return save_figure(fig, path)


def path_strip(
    result, sample: int, source: Tensor, target: Tensor, classes: Sequence[str], pair: Tuple[int, int], path: Path
) -> Path:
    """Source, recorded iterates, and target of one walk, with the source-class confidence of each."""
    plt = pyplot()
    iterates = result.trace_images[:, sample]
    conf = result.trace_confidence[:, sample]
    its = result.trace_iterations.tolist()
    n = len(its) + 2
    fig, axes = plt.subplots(1, n, figsize=(1.4 * n, 1.9))
    _show(axes[0], source)
    axes[0].set_title("source", fontsize=8)
    axes[0].set_xlabel(f"p={float(result.initial_confidence[sample]):.3f}", fontsize=7)
    for a, (it, image, p) in enumerate(zip(its, iterates, conf, strict=True), start=1):
        _show(axes[a], image)
        axes[a].set_title(f"iter {it}", fontsize=8)
        axes[a].set_xlabel(f"p={float(p):.3f}", fontsize=7)
    _show(axes[-1], target)
    axes[-1].set_title("target", fontsize=8)
    fig.suptitle(f"{classes[pair[0]]} held while walking toward a {classes[pair[1]]}", fontsize=9)
    fig.tight_layout()
    return save_figure(fig, path)


def linear_paths(confidence: Tensor, path: Path) -> Path:
    """Source-class confidence along (1 - t) source + t output for every pair, and their mean."""
    plt = pyplot()
    t = torch.linspace(0, 1, confidence.shape[1])
    fig, ax = plt.subplots(figsize=(5, 3.2))
    for row in confidence:
        ax.plot(t, row, color="0.7", lw=0.6)
    ax.plot(t, confidence.mean(0), color="tab:red", lw=2, label="mean")
    ax.set_xlabel("t  (0 = source, 1 = LST output)")
    ax.set_ylabel("source-class confidence")
    ax.set_ylim(0, 1.02)
    ax.legend(loc="lower left")
    fig.tight_layout()
    return save_figure(fig, path)


def triangle_maps(
    confidence: Tensor, weights: Tensor, sources: Tensor, ends1: Tensor, ends2: Tensor, path: Path
) -> Path:
    """Filled contours of the confidence over triangles (source, output 1, output 2), images at corners."""
    plt = pyplot()
    from matplotlib.offsetbox import AnnotationBbox, OffsetImage
    from matplotlib.tri import Triangulation

    corners = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.5, 3**0.5 / 2]], dtype=torch.float64)
    xy = weights.to(torch.float64) @ corners
    tri = Triangulation(xy[:, 0].numpy(), xy[:, 1].numpy())
    n = confidence.shape[0]
    levels = torch.linspace(0, 1, 11).tolist()
    fig, axes = plt.subplots(1, n, figsize=(4 * n, 3.8), squeeze=False)
    cs = None
    for k in range(n):
        ax = axes[0, k]
        values = confidence[k].double()
        known = torch.isfinite(values)
        if bool(known.all()):
            cs = ax.tricontourf(tri, values.numpy(), levels=levels, cmap="viridis")
        else:  # a NaN confidence (the model gave no number): its small triangles are left blank
            part = Triangulation(xy[:, 0].numpy(), xy[:, 1].numpy(), tri.triangles)
            part.set_mask((~known).numpy()[tri.triangles].any(axis=1))
            if not bool(part.mask.all()):
                cs = ax.tricontourf(part, values.nan_to_num(0.0).numpy(), levels=levels, cmap="viridis")
        for corner, image in zip(corners, (sources[k], ends1[k], ends2[k]), strict=True):
            box = OffsetImage(image[0].float().numpy(), cmap="gray", zoom=1.6)
            ax.add_artist(AnnotationBbox(box, corner.tolist(), frameon=True, pad=0.1))
        ax.set_xlim(-0.2, 1.2)
        ax.set_ylim(-0.2, 1.05)
        ax.set_aspect("equal")
        ax.axis("off")
        title = f"min {float(values[known].min()):.3f}, mean {float(values[known].mean()):.3f}" if known.any() else ""
        missing = int((~known).sum())
        ax.set_title(title + (f" ({missing} points n/a)" if missing else ""), fontsize=9)
    if cs is None:  # every point n/a: the colour bar of the scale alone
        cs = plt.cm.ScalarMappable(cmap="viridis", norm=plt.Normalize(0, 1))
    fig.colorbar(cs, ax=axes[0, :].tolist(), shrink=0.8, label="source-class confidence")
    return save_figure(fig, path)


def pair_strips(sources: Tensor, outputs: Tensor, targets: Tensor, confidence: Tensor, path: Path) -> Path:
    """Rows of (source, LST output with its source-class confidence, target)."""
    plt = pyplot()
    n = sources.shape[0]
    fig, axes = plt.subplots(n, 3, figsize=(4.2, 1.45 * n), squeeze=False)
    for i in range(n):
        for j, (image, title) in enumerate(
            ((sources[i], "source"), (outputs[i], "LST output"), (targets[i], "target"))
        ):
            _show(axes[i, j], image)
            if i == 0:
                axes[i, j].set_title(title, fontsize=8)
        axes[i, 1].set_xlabel(f"p={float(confidence[i]):.3f}", fontsize=7, labelpad=1)
    fig.tight_layout()
    return save_figure(fig, path)


def width_bands(radii: Tensor, low: Tensor, high: Tensor, path: Path) -> Path:
    """Per sample, the band between the low and high confidence quantiles against the radius."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(5, 3.2))
    for i in range(low.shape[0]):
        ax.fill_between(radii.numpy(), low[i].numpy(), high[i].numpy(), alpha=0.15, color="tab:blue")
    ax.plot(radii.numpy(), low.mean(0).numpy(), color="tab:blue", lw=2, label="mean 5% quantile")
    ax.plot(radii.numpy(), high.mean(0).numpy(), color="tab:orange", lw=2, label="mean 95% quantile")
    ax.set_xlabel("radius (l2) across the direction source -> output")
    ax.set_ylabel("source-class confidence")
    ax.set_ylim(0, 1.02)
    ax.legend(loc="lower left", fontsize=8)
    fig.tight_layout()
    return save_figure(fig, path)
