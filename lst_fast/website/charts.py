"""The one-walk pages' charts as inline SVG, drawn here from the numbers (no plotting library, no script):
a confidence curve, a band between two curves, and a triangle's confidence map in the paper's layout
(source at the lower left, the two LST outputs at the lower right and the top)."""

from __future__ import annotations

import math
from html import escape
from typing import List, Sequence, Tuple

import torch
from torch import Tensor

from lst_fast.geometry import triangle_weights

__all__ = ["band_chart", "curve_chart", "triangle_map"]

WIDTH, HEIGHT, PAD = 320, 200, 36
# viridis at 0, 0.25, 0.5, 0.75 and 1 (the report's colour map), interpolated linearly between them
VIRIDIS = ((68, 1, 84), (59, 82, 139), (33, 145, 140), (94, 201, 98), (253, 231, 37))


NO_VALUE = "#bbbbbb"  # a cell whose confidence is NaN (the model gave no number): grey, off the colour map


def colour(value: float) -> str:
    if not math.isfinite(value):
        return NO_VALUE
    v = min(max(value, 0.0), 1.0) * (len(VIRIDIS) - 1)
    i = min(int(v), len(VIRIDIS) - 2)
    t = v - i
    r, g, b = (round(a + (b - a) * t) for a, b in zip(VIRIDIS[i], VIRIDIS[i + 1], strict=True))
    return f"#{r:02x}{g:02x}{b:02x}"


def _frame(title: str, xlabel: str, xs: Sequence[float]) -> Tuple[List[str], callable, callable]:
    lo, hi = min(xs), max(xs)
    span = (hi - lo) or 1.0

    def x(v: float) -> float:
        return PAD + (v - lo) / span * (WIDTH - PAD - 8)

    def y(v: float) -> float:
        return HEIGHT - PAD + 8 - min(max(v, 0.0), 1.0) * (HEIGHT - PAD - 8)

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" '
        f'aria-label="{escape(title)}" class="chart">',
        f"<title>{escape(title)}</title>",
        f'<line x1="{PAD}" y1="{y(0):.1f}" x2="{WIDTH - 8}" y2="{y(0):.1f}" class="axis"/>',
        f'<line x1="{PAD}" y1="{y(0):.1f}" x2="{PAD}" y2="{y(1):.1f}" class="axis"/>',
    ]
    for v in (0.0, 0.5, 1.0):
        parts.append(f'<text x="{PAD - 4}" y="{y(v) + 4:.1f}" text-anchor="end">{v:g}</text>')
    for v in (lo, hi):
        parts.append(f'<text x="{x(v):.1f}" y="{HEIGHT - PAD + 22}" text-anchor="middle">{v:g}</text>')
    parts.append(f'<text x="{(PAD + WIDTH) / 2:.1f}" y="{HEIGHT - 2}" text-anchor="middle">{escape(xlabel)}</text>')
    return parts, x, y


def curve_chart(xs: Sequence[float], ys: Sequence[float], title: str, xlabel: str) -> str:
    """One curve of confidences (0 to 1) against xs (a NaN confidence is left out of it)."""
    parts, x, y = _frame(title, xlabel, xs)
    points = " ".join(f"{x(a):.1f},{y(b):.1f}" for a, b in zip(xs, ys, strict=True) if math.isfinite(b))
    parts.append(f'<polyline points="{points}" class="curve"/>')
    return "".join(parts) + "</svg>"


def band_chart(xs: Sequence[float], low: Sequence[float], high: Sequence[float], title: str, xlabel: str) -> str:
    """The band between two curves of confidences against xs, its edges drawn."""
    parts, x, y = _frame(title, xlabel, xs)
    kept = [(a, lo, hi) for a, lo, hi in zip(xs, low, high, strict=True) if math.isfinite(lo) and math.isfinite(hi)]
    upper = [f"{x(a):.1f},{y(hi):.1f}" for a, _, hi in kept]
    lower = [f"{x(a):.1f},{y(lo):.1f}" for a, lo, _ in kept]
    parts.append(f'<polygon points="{" ".join(upper + lower[::-1])}" class="band"/>')
    parts.append(f'<polyline points="{" ".join(lower)}" class="curve low"/>')
    parts.append(f'<polyline points="{" ".join(upper)}" class="curve high"/>')
    return "".join(parts) + "</svg>"


def triangle_map(confidence: Tensor, n: int, title: str, size: int = 220) -> str:
    """The confidence over the triangle grid of lst_fast.geometry.triangle_weights(n): each small triangle
    of the grid filled with the mean of its three corners' confidences (grey where one is NaN)."""
    weights = triangle_weights(n)
    corners = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.5, 3**0.5 / 2]], dtype=torch.float64)
    xy = weights @ corners
    index = {tuple(round(float(w) * n) for w in row[1:]): k for k, row in enumerate(weights)}
    values = confidence.double().tolist()
    margin = 14

    def point(k: int) -> str:
        return f"{margin + xy[k, 0] * (size - 2 * margin):.1f},{size - margin - xy[k, 1] * (size - 2 * margin):.1f}"

    cells = []
    for a in range(n):
        for b in range(n - a):
            tri = [(a, b), (a + 1, b), (a, b + 1)]
            cells.append(tri)
            if a + b + 1 < n:
                cells.append([(a + 1, b), (a + 1, b + 1), (a, b + 1)])
    height = 3**0.5 / 2 * (size - 2 * margin) + 2 * margin  # the triangle's own height, and the margins
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 {size - height:.1f} {size} {height:.1f}" role="img" '
        f'aria-label="{escape(title)}" class="triangle">',
        f"<title>{escape(title)}</title>",
    ]
    for tri in cells:
        ks = [index[c] for c in tri]
        mean = sum(values[k] for k in ks) / 3
        parts.append(f'<polygon points="{" ".join(point(k) for k in ks)}" fill="{colour(mean)}"/>')
    return "".join(parts) + "</svg>"
