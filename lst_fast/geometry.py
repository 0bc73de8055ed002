"""Confidence over the region around the level set (docs/ALGORITHM.md section 2): along linear paths, over
triangles (convex hulls) between a source and its LST outputs and over k-simplices sampled uniformly
(Dirichlet weights), and the width across the step direction. Every interpolated image comes from the
batched simplex-points operator, and the model runs without gradients in memory-sized chunks, under
lst_fast.walk.runtime's contexts for its precision."""

from __future__ import annotations

import math
import numbers
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Optional, Sequence, Tuple, Union, cast

import torch
from torch import Tensor

from lst_fast import ops
from lst_fast.backends.confidence import class_probability
from lst_fast.checks import check_count
from lst_fast.errors import InputError, InputTypeError
from lst_fast.walk import prepared_model, runtime, validation
from lst_fast.walk.settings import check_precision

if TYPE_CHECKING:
    from lst_fast.walk.result import TraversalResult

DEFAULT_CHUNK_BYTES = 256 * 2**20  # model inputs per forward pass
# Interpolated points per pass on the CPU, where batches that outgrow the caches run slower
# (bench/RESULTS.md, "Geometry chunks on the CPU").
CPU_CHUNK_BYTES = 2 * 2**20


def _prepared_forward(
    model: torch.nn.Module, precision: str, norm: runtime.Normalization, probe: Tensor
) -> Callable[[Tensor], Tensor]:
    """images -> logits: the model prepared for `precision` (checked on a few normalized `probe` images),
    normalization first."""
    prepared = prepared_model.prepare(model, precision, runtime.normalize(probe[:4], norm))
    return runtime.normalized(prepared, norm)


# -- argument checks: every public function checks its arguments first and names the one that is wrong ----


def _check_int(name: str, value: object, minimum: int) -> None:
    check_count(name, value, minimum)


def _check_tensor(name: str, value: object, dim: Optional[int] = None, floating: bool = False) -> None:
    if not isinstance(value, Tensor):
        raise InputTypeError(f"{name} must be a tensor, got {type(value).__name__}")
    if dim is not None and value.dim() != dim:
        raise InputError(f"{name} must have {dim} dimensions, got shape {tuple(value.shape)}")
    if floating and not value.is_floating_point():
        raise InputTypeError(f"{name} must be floating-point, got {value.dtype}")


def _checked_label(label: Optional[Tensor], n: int, logits: Tensor) -> Tensor:
    """validation.check_label, against the model's number of classes (known from its first logits)."""
    if label is None:
        raise InputTypeError(f"label must be an integer tensor of shape ({n},), got None")
    return cast(Tensor, validation.check_label(label, n, logits.shape[1], logits.device))


def _check_same_images(**images: Tensor) -> None:
    for name, value in images.items():
        _check_tensor(name, value, dim=4, floating=True)
    shapes = {name: tuple(value.shape) for name, value in images.items()}
    if len(set(shapes.values())) != 1:
        raise InputError(f"{', '.join(shapes)} must have one shape (N, C, H, W), got {shapes}")


def _check_chunk_bytes(chunk_bytes: object) -> None:
    if chunk_bytes is not None:
        _check_int("chunk_bytes", chunk_bytes, 1)


def line_weights(steps: int = 21, dtype: torch.dtype = torch.float64) -> Tensor:
    """Weights of evenly spaced points on a line segment.

    Args:
        steps: number of points, at least 2 (both ends included).
        dtype: floating-point type of the weights.

    Returns:
        (steps, 2) weights (1 - t, t) for t = 0, 1/(steps-1), ..., 1.
    """
    _check_int("steps", steps, 2)
    t = torch.arange(steps, dtype=torch.float64) / (steps - 1)
    return torch.stack([1 - t, t], dim=1).to(dtype)


def triangle_weights(n: int = 10, dtype: torch.dtype = torch.float64) -> Tensor:
    """Barycentric grid (P, 3) of (1 - a - b, a, b) for a, b in {0, 1/n, ..., 1} with a + b <= 1.

    Integer arithmetic, so all (n + 1)(n + 2) / 2 points are kept (n = 10: 66 points; the paper's code
    loses 2 of them to a floating-point test).

    Args:
        n: divisions per edge, at least 1.
        dtype: floating-point type of the weights.

    Returns:
        ((n + 1)(n + 2) / 2, 3) weights; the first vertex (the source) is row 0, weights (1, 0, 0).
    """
    _check_int("n", n, 1)
    rows = [(n - i - j, i, j) for i in range(n + 1) for j in range(n + 1 - i)]
    return (torch.tensor(rows, dtype=torch.float64) / n).to(dtype)


@torch.no_grad()
def simplex_confidence(
    model: torch.nn.Module,
    vertices: Tensor,
    weights: Tensor,
    label: Tensor,
    *,
    mean: Optional[Union[Sequence[float], Tensor]] = None,
    std: Optional[Union[Sequence[float], Tensor]] = None,
    chunk_bytes: Optional[int] = None,
    precision: str = "fp32",
) -> Tensor:
    """Confidence for `label` at every convex combination of per-sample vertices.

    The points are made by the fused `simplex_points` operator straight into model-input batches, a
    chunk of at most `chunk_bytes` at a time.

    Args:
        model: classifier returning logits (M, K) for images in [0, 1] (after the optional mean/std).
        vertices: per-sample vertices (N, V, C, H, W); V = 2 for lines, 3 for triangles.
        weights: barycentric weights (P, V), e.g. `line_weights` or `triangle_weights`.
        label: class whose confidence is measured (N,).
        mean: per-channel mean applied in front of the model, or None.
        std: per-channel standard deviation applied in front of the model, or None.
        chunk_bytes: model inputs per forward pass (default 256 MiB; 2 MiB on the CPU).
        precision: "fp32" evaluates the model as given; "bf16" a bf16 working copy built for this call (as
            traverse's fast mode does), several times faster where bf16 is native.

    Returns:
        (N, P) float32 softmax confidences for `label`.
    """
    check_precision(precision)
    validation.check_model(model)
    _check_tensor("vertices", vertices, floating=True)
    if vertices.dim() != 5:
        raise InputError(f"vertices must have shape (N, K, C, H, W), got {tuple(vertices.shape)}")
    _check_tensor("weights", weights, floating=True)
    if weights.dim() != 2 or weights.shape[1] != vertices.shape[1] or weights.shape[0] < 1:
        raise InputError(f"weights must have shape (P, {vertices.shape[1]}) with P >= 1, got {tuple(weights.shape)}")
    _check_chunk_bytes(chunk_bytes)
    n, _, c = vertices.shape[:3]
    p = weights.shape[0]
    weights = weights.to(vertices.device)
    norm = validation.normalization(mean, std, channels=c, device=vertices.device, dtype=vertices.dtype)
    if chunk_bytes is None:
        chunk_bytes = CPU_CHUNK_BYTES if vertices.device.type == "cpu" else DEFAULT_CHUNK_BYTES
    per_sample = p * vertices[0, 0].numel() * vertices.element_size() if n else 1
    step = max(1, chunk_bytes // max(per_sample, 1))
    out = []
    forward = None
    with runtime.running(model, precision, vertices.device):
        for start in range(0, n, step):
            points = ops.simplex_points(vertices[start : start + step], weights)
            if forward is None:
                forward = _prepared_forward(model, precision, norm, points)
            logits = forward(points)  # (m * P, classes); class_probability works in float64
            if start == 0:
                label = _checked_label(label, n, logits)
            out.append(class_probability(logits, label[start : start + step].repeat_interleave(p)).view(-1, p))
    return torch.cat(out).float() if out else vertices.new_empty(0, p, dtype=torch.float32)


def linear_path_confidence(
    model: torch.nn.Module, source: Tensor, end: Tensor, label: Tensor, steps: int = 21, **kw: Any
) -> Tensor:
    """Confidence for `label` along the segment (1 - t) source + t end.

    Args:
        model: classifier returning logits for images in [0, 1] (after the optional mean/std).
        source: start images (N, C, H, W).
        end: end images (N, C, H, W), e.g. `TraversalResult.images`.
        label: class whose confidence is measured (N,).
        steps: points on each segment, both ends included.
        **kw: `mean`, `std`, `chunk_bytes`, `precision`, as for `simplex_confidence`.

    Returns:
        (N, steps) confidences, t = 0 (the source) first.
    """
    _check_same_images(source=source, end=end)
    return simplex_confidence(model, torch.stack([source, end], 1), line_weights(steps), label, **kw)


def triangle_confidence(
    model: torch.nn.Module, source: Tensor, end1: Tensor, end2: Tensor, label: Tensor, n: int = 10, **kw: Any
) -> Tensor:
    """Confidence for `label` over the triangle grid of (source, end1, end2).

    Args:
        model: classifier returning logits for images in [0, 1] (after the optional mean/std).
        source: the triangles' first vertices (N, C, H, W).
        end1: second vertices (N, C, H, W), e.g. the LST outputs of one round.
        end2: third vertices (N, C, H, W).
        label: class whose confidence is measured (N,).
        n: divisions per edge (`triangle_weights(n)`).
        **kw: `mean`, `std`, `chunk_bytes`, `precision`, as for `simplex_confidence`.

    Returns:
        (N, (n+1)(n+2)/2) confidences, in the order of `triangle_weights(n)`.
    """
    _check_same_images(source=source, end1=end1, end2=end2)
    return simplex_confidence(model, torch.stack([source, end1, end2], 1), triangle_weights(n), label, **kw)


TRIANGLE_DROPS = (0.0, 0.1, 0.2, 0.3)


def triangle_statistics(confidence: Tensor, weights: Tensor) -> Dict[str, Tensor]:
    """The paper's Table 2 numbers per triangle, from confidences (T, P) on a barycentric grid (P, 3)
    whose first vertex is the source:

    p_source        confidence at the source vertex
    mean            mean confidence over the grid
    frac_above_{d}  fraction of grid points with p > p_source - d, for d in TRIANGLE_DROPS (NaN when a
                    confidence of the triangle is NaN: no value, not "below")
    edge_mean       mean confidence over the two edges from the source (source counted once)
    edge_min_drop   minimum over those edges of p - p_source

    Args:
        confidence: confidences (T, P) of T triangles on the grid.
        weights: the grid (P, 3), holding the source vertex (1, 0, 0) once.

    Returns:
        A dict of (T,) float64 tensors, keyed as above (`frac_above_0`, `frac_above_0.1`, ...).
    """
    _check_tensor("confidence", confidence, floating=True)
    _check_tensor("weights", weights, floating=True)
    if confidence.dim() != 2 or weights.dim() != 2 or weights.shape != (confidence.shape[1], 3):
        raise InputError(
            f"need confidence (T, P) and weights (P, 3), got {tuple(confidence.shape)} and {tuple(weights.shape)}"
        )
    source = torch.nonzero(weights[:, 0] == 1).flatten()
    if source.numel() != 1:
        raise InputError("the grid must contain the source vertex (weights row (1, 0, 0)) exactly once")
    conf = confidence.to(torch.float64)
    p_src = conf[:, source[0]]
    on_edge = ((weights[:, 1] == 0) | (weights[:, 2] == 0)).to(conf.device)
    stats = {"p_source": p_src, "mean": conf.mean(1)}
    # A NaN confidence is no value, never "below": a triangle with one has no fraction (NaN), as its mean.
    undefined = conf.isnan().any(1)
    for d in TRIANGLE_DROPS:
        fraction = (conf > (p_src - d)[:, None]).to(torch.float64).mean(1)
        stats[f"frac_above_{d:g}"] = fraction.masked_fill(undefined, float("nan"))
    stats["edge_mean"] = conf[:, on_edge].mean(1)
    stats["edge_min_drop"] = (conf[:, on_edge] - p_src[:, None]).amin(1)
    return stats


def dirichlet_weights(points: int, vertices: int, seed: int, dtype: torch.dtype = torch.float64) -> Tensor:
    """(points, vertices) barycentric weights uniform over the simplex, Dirichlet(1, ..., 1): independent
    Exponential(1) draws normalized by their row sum, from a CPU generator seeded with `seed`, so the same
    seed gives the same weights on every machine and for every model."""
    _check_int("points", points, 1)
    _check_int("vertices", vertices, 1)
    _check_int("seed", seed, 0)
    generator = torch.Generator().manual_seed(int(seed))
    draws = torch.empty(points, vertices, dtype=torch.float64).exponential_(generator=generator)
    return (draws / draws.sum(1, keepdim=True)).to(dtype)


def simplex_statistics(
    confidence: Tensor, p_source: Tensor, drops: Sequence[float] = TRIANGLE_DROPS
) -> Dict[str, Tensor]:
    """Per source, the confidence over its simplices from confidences (N, S, P) at the same P Dirichlet points
    of each of its S simplices, and p_source (N,) (p at the source vertex):

    mean              mean confidence over the simplices
    frac_above_{d}    fraction with p > p_source - d, for d in `drops` (NaN where a confidence is NaN)
    se_mean, se_frac_above_{d}   their Monte Carlo standard errors: per point the average over the S
                      simplices, then the standard deviation over the P points / sqrt(P) (the points are
                      independent; the simplices of one source share them, so they are averaged first)
    """
    _check_tensor("confidence", confidence, dim=3, floating=True)
    _check_tensor("p_source", p_source, dim=1, floating=True)
    if p_source.shape[0] != confidence.shape[0] or confidence.shape[1] < 1 or confidence.shape[2] < 2:
        raise InputError(
            "need confidence (N, S, P) with S >= 1 and P >= 2, and p_source (N,), got "
            f"{tuple(confidence.shape)} and {tuple(p_source.shape)}"
        )
    conf = confidence.to(torch.float64)
    points = conf.shape[2]
    per_point = {"mean": conf.mean(1)}  # (N, P): each point averaged over the source's simplices
    threshold = p_source.to(device=conf.device, dtype=torch.float64)[:, None, None]
    # A NaN confidence (or p_source) is no value, never "below": the point's fraction is NaN, as its mean.
    undefined = conf.isnan().any(1) | threshold[:, :, 0].isnan()
    for d in drops:
        fraction = (conf > threshold - d).to(torch.float64).mean(1)
        per_point[f"frac_above_{d:g}"] = fraction.masked_fill(undefined, float("nan"))
    stats = {}
    for name, values in per_point.items():
        stats[name] = values.mean(1)
        stats[f"se_{name}"] = values.std(1) / points**0.5
    return stats


def _regularized_incomplete_beta(x: Tensor, a: Tensor, b: Tensor) -> Tensor:
    """I_x(a, b), elementwise, float64, for 0 < x < 1 and a, b > 0: the Beta(a, b) distribution function, from
    its continued fraction (modified Lentz), taken on the side of the mean where it converges fast."""
    flip = x > (a + 1) / (a + b + 2)
    a, b, x = torch.where(flip, b, a), torch.where(flip, a, b), torch.where(flip, 1 - x, x)
    tiny, tolerance = 1e-300, 1e-15

    def nonzero(t: Tensor) -> Tensor:
        return torch.where(t.abs() < tiny, torch.full_like(t, tiny), t)

    c = torch.ones_like(x)
    d = 1 / nonzero(1 - (a + b) * x / (a + 1))
    fraction = d
    # about sqrt(max(a, b)) terms at the worst x; the cap (2e4 terms) is far beyond any point count used
    for m in range(1, 20_000):
        for numerator in (
            m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m)),
            -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1)),
        ):
            d = 1 / nonzero(1 + numerator * d)
            c = nonzero(1 + numerator / c)
            fraction = fraction * d * c
        if bool(((d * c - 1).abs() <= tolerance).all()):
            break
    log_front = a * torch.log(x) + b * torch.log1p(-x) - (torch.lgamma(a) + torch.lgamma(b) - torch.lgamma(a + b))
    below = torch.exp(log_front) * fraction / a
    return torch.where(flip, 1 - below, below)


def _beta_quantile(q: float, a: Tensor, b: Tensor) -> Tensor:
    """The q-quantile of Beta(a, b), elementwise (1-D), for a, b >= 1: Newton steps on I_x(a, b) = q from a
    normal approximation, kept inside a bracket that every step narrows, with a bisection wherever a step
    would leave it; to 1e-13 relative, in a few steps from the usual start. Solved on the side of the mean
    nearer 0 (1 - quantile(1 - q; b, a) when a > b), so quantiles near 1 keep their precision too."""
    flip = a > b
    a, b = torch.where(flip, b, a), torch.where(flip, a, b)
    target = torch.where(flip, torch.full_like(a, 1 - q), torch.full_like(a, q))
    # the start: Abramowitz & Stegun 26.5.22 (the Beta quantile from the normal one; z is the upper quantile)
    z = -math.sqrt(2) * torch.erfinv(2 * target - 1)
    shape = (z * z - 3) / 6
    h = 2 / (1 / (2 * a - 1) + 1 / (2 * b - 1))
    w = z * (shape + h).clamp(min=0).sqrt() / h - (1 / (2 * b - 1) - 1 / (2 * a - 1)) * (shape + 5 / 6 - 2 / (3 * h))
    x = (a / (a + b * torch.exp(2 * w))).clamp(1e-300, 1 - 1e-16)
    low, high = torch.zeros_like(a), torch.ones_like(a)
    log_beta = torch.lgamma(a) + torch.lgamma(b) - torch.lgamma(a + b)
    active = torch.arange(a.shape[0])  # the elements not yet converged
    for _ in range(200):
        if active.numel() == 0:
            break
        xa, aa, ba = x[active], a[active], b[active]
        error = _regularized_incomplete_beta(xa, aa, ba) - target[active]
        la = torch.where(error < 0, xa, low[active])
        ha = torch.where(error > 0, xa, high[active])
        density = torch.exp((aa - 1) * torch.log(xa) + (ba - 1) * torch.log1p(-xa) - log_beta[active])
        newton = xa - error / density
        inside = (newton > la) & (newton < ha)
        converged = (error == 0) | ((newton - xa).abs() <= 1e-13 * xa)
        proposal = torch.where(inside | converged, newton, (la + ha) / 2)
        proposal = torch.where(error == 0, xa, proposal)
        done = converged | (ha - la <= 1e-15 * xa)
        x[active], low[active], high[active] = proposal, la, ha
        active = active[~done]
    return torch.where(flip, 1 - x, x)


def fraction_interval(estimate: Tensor, points: int, level: float = 0.95) -> Tuple[Tensor, Tensor]:
    """(low, high) interval of a simplex fraction from simplex_statistics: the Clopper-Pearson interval of
    `estimate * points` successes in `points` trials, at the two-sided `level`.

    Clopper-Pearson rather than Wilson: its coverage is at least `level` for every true share, which is
    what matters here, since the robust models' fractions sit within 0.01 of 1, where Wilson's coverage
    dips to about 85% at a 95% level (and the normal interval's too). For one simplex per source the points'
    indicators are independent Bernoulli draws, so the interval is exact in that sense. For several
    simplices the per-point values are averages in [0, 1], whose variance is at most that of one indicator:
    counting each point as one trial is conservative there, never narrower than their spread warrants
    (the standard errors of simplex_statistics are not used, as their noise near 0 and 1 is what made the
    normal interval under-cover). The bounds are Beta quantiles, computed in float64 to 1e-12 relative.

    Args:
        estimate: fractions in [0, 1] (any shape; NaN gives NaN bounds), e.g. `frac_above_{d}`.
        points: P, the number of Dirichlet points each fraction was measured at.
        level: two-sided confidence level, in (0, 1).

    Returns:
        (low, high), float64 tensors of estimate's shape.
    """
    _check_tensor("estimate", estimate, floating=True)
    _check_int("points", points, 1)
    if isinstance(level, bool) or not isinstance(level, numbers.Real) or not 0 < level < 1:
        raise InputError(f"level must be a number in (0, 1), got {level!r}")
    fraction = estimate.detach().to(device="cpu", dtype=torch.float64).flatten()
    if bool(((fraction < 0) | (fraction > 1)).any()):
        raise InputError("estimate must hold fractions in [0, 1] (or NaN)")
    unknown = fraction.isnan()
    successes = fraction.nan_to_num(0.0) * points
    whole = successes.round()
    successes = torch.where((successes - whole).abs() < 1e-9, whole, successes)  # count / P * P up to rounding
    # several simplices average to fractions of a point: rounded outward to whole points, which only widens
    fewest, most = successes.floor(), successes.ceil()
    tail = (1 - float(level)) / 2
    one = torch.ones_like(fewest)  # a Beta parameter where the bound is 0 or 1 and its quantile unused
    low = _beta_quantile(tail, torch.where(fewest > 0, fewest, one), points - fewest + 1)
    high = _beta_quantile(1 - tail, most + 1, torch.where(most < points, points - most, one))
    low = torch.where(fewest > 0, low, torch.zeros_like(low)).masked_fill(unknown, float("nan"))
    high = torch.where(most < points, high, torch.ones_like(high)).masked_fill(unknown, float("nan"))
    return low.view(estimate.shape).to(estimate.device), high.view(estimate.shape).to(estimate.device)


def per_source(stats: Dict[str, Tensor], source_index: Tensor, num_sources: int) -> Dict[str, Tensor]:
    """Average triangle statistics over each source's triangles (edge_min_drop: their minimum).

    Args:
        stats: per-triangle statistics, each (T,), as `triangle_statistics` returns them.
        source_index: the source of each triangle (T,), integers in [0, num_sources).
        num_sources: number of sources.

    Returns:
        A dict with the same keys, each (num_sources,); NaN for a source without triangles.
    """
    if not isinstance(stats, dict) or not stats:
        raise InputError("stats must be a non-empty dict of per-triangle tensors (from triangle_statistics)")
    _check_int("num_sources", num_sources, 0)
    _check_tensor("source_index", source_index, dim=1)
    if source_index.is_floating_point() or source_index.dtype == torch.bool:
        raise InputTypeError(f"source_index must be an integer tensor, got {source_index.dtype}")
    for name, values in stats.items():
        _check_tensor(f"stats[{name!r}]", values, dim=1, floating=True)
        if values.shape != source_index.shape:
            raise InputError(
                f"stats[{name!r}] has {values.shape[0]} triangles but source_index {source_index.shape[0]}"
            )
    if source_index.numel() and (int(source_index.min()) < 0 or int(source_index.max()) >= num_sources):
        raise InputError(
            f"source_index must lie in [0, num_sources={num_sources}), got values in "
            f"[{int(source_index.min())}, {int(source_index.max())}]"
        )
    index = source_index.to(device=next(iter(stats.values())).device, dtype=torch.long)
    out = {}
    for name, values in stats.items():
        reduce = "amin" if name == "edge_min_drop" else "mean"
        init = torch.full((num_sources,), float("nan"), dtype=values.dtype, device=values.device)
        out[name] = init.scatter_reduce_(0, index, values, reduce, include_self=False)
    return out


@torch.no_grad()
def width_profile(
    model: torch.nn.Module,
    x: Tensor,
    direction: Tensor,
    label: Tensor,
    radii: Sequence[float],
    *,
    k: int = 256,
    quantiles: Tuple[float, float] = (0.05, 0.95),
    generator: Optional[torch.Generator] = None,
    mean: Optional[Union[Sequence[float], Tensor]] = None,
    std: Optional[Union[Sequence[float], Tensor]] = None,
    chunk_bytes: int = DEFAULT_CHUNK_BYTES,
    precision: str = "fp32",
) -> Dict[str, Tensor]:
    """Width of the high-confidence region around iterates x (N, C, H, W) across the step direction.

    Draws k random directions per sample, removes their component along `direction` (the step), normalizes
    them, and evaluates the confidence for `label` at x + r * dir for every radius r.

    Args:
        model: classifier returning logits for images in [0, 1] (after the optional mean/std).
        x: the iterates (N, C, H, W).
        direction: the step at each iterate (N, C, H, W); the directions drawn are orthogonal to it.
        label: class whose confidence is measured (N,).
        radii: distances from x (R values).
        k: random directions per sample.
        quantiles: the (low, high) quantiles of the confidence over the k directions.
        generator: random generator for the directions (on x's device).
        mean: per-channel mean applied in front of the model, or None.
        std: per-channel standard deviation applied in front of the model, or None.
        chunk_bytes: model inputs per forward pass.
        precision: as for `simplex_confidence`.

    Returns:
        {"radii": (R,), "low": (N, R), "high": (N, R)}: the quantiles of the confidence at each radius.
    """
    check_precision(precision)
    radii = _check_width_arguments(
        model, x, direction, radii, k=k, quantiles=quantiles, generator=generator, chunk_bytes=chunk_bytes
    )
    n, c = x.shape[:2]
    radii_t = torch.as_tensor(radii, dtype=torch.float64)
    if n == 0:
        empty = x.new_empty(0, len(radii), dtype=torch.float32)
        return {"radii": radii_t, "low": empty, "high": empty.clone()}
    d = x[0].numel()
    u = direction.reshape(n, 1, d).to(torch.float64)
    u = u / u.norm(dim=2, keepdim=True).clamp_min(1e-300)  # a zero step leaves the directions as drawn
    norm = validation.normalization(mean, std, channels=c, device=x.device, dtype=x.dtype)
    step = max(1, chunk_bytes // max(k * d * x.element_size(), 1))
    q = torch.tensor(quantiles, dtype=torch.float64, device=x.device)
    chunks: List[Tensor] = []  # (2, m, R): the low and high quantiles of each chunk of samples
    forward = None
    # One float64 scratch and one buffer of points, reused by every chunk and radius: a fresh tensor of
    # this size per radius costs more (in page faults) than the arithmetic. The values are those of
    # (base + r * dirs).to(x.dtype), operation for operation.
    scratch = torch.empty(min(step, n), k, d, dtype=torch.float64, device=x.device)
    buffer = torch.empty(min(step, n) * k, *x.shape[1:], dtype=x.dtype, device=x.device)
    with runtime.running(model, precision, x.device):
        for start in range(0, n, step):
            m = min(step, n - start)
            dirs = _directions_across(u[start : start + m], k, generator, scratch[:m])
            base = x[start : start + m].reshape(m, 1, d).to(torch.float64)
            rows: List[Tensor] = []
            for r in radii_t.tolist():
                moved = torch.mul(dirs, r, out=scratch[:m]).add_(base)  # base + r * dirs
                points = buffer[: m * k]
                points.view(m, k, d).copy_(moved)
                if forward is None:
                    forward = _prepared_forward(model, precision, norm, points)
                logits = forward(points)
                if start == 0 and not rows:
                    label = _checked_label(label, n, logits)
                p = class_probability(logits, label[start : start + m].repeat_interleave(k)).view(m, k)
                rows.append(torch.quantile(p, q, dim=1))  # (2, m)
            chunks.append(torch.stack(rows, 2))
    quantile_rows = torch.cat(chunks, 1).float()
    return {"radii": radii_t, "low": quantile_rows[0], "high": quantile_rows[1]}


def _check_width_arguments(
    model: torch.nn.Module,
    x: Tensor,
    direction: Tensor,
    radii: Sequence[float],
    k: int,
    quantiles: Tuple[float, float],
    generator: Optional[torch.Generator],
    chunk_bytes: int,
) -> List[float]:
    """width_profile's checks (but the precision's, checked first, and the label's, which needs the model's
    classes); returns the radii."""
    validation.check_model(model)
    _check_tensor("x", x, dim=4, floating=True)
    _check_tensor("direction", direction, floating=True)
    if direction.shape != x.shape:
        raise InputError(
            f"x must be (N, C, H, W) and direction of its shape, got {tuple(x.shape)}, {tuple(direction.shape)}"
        )
    _check_int("k", k, 2)
    _check_chunk_bytes(chunk_bytes)
    try:
        values = [float(r) for r in radii]
    except (TypeError, ValueError):
        raise InputTypeError(f"radii must be a sequence of numbers, got {radii!r}") from None
    if not values or not all(math.isfinite(r) for r in values):
        raise InputError(f"radii must be a non-empty sequence of finite numbers, got {values}")
    if not (
        isinstance(quantiles, (tuple, list))
        and len(quantiles) == 2
        and all(isinstance(q, numbers.Real) and 0 <= q <= 1 for q in quantiles)
    ):
        raise InputError(f"quantiles must be two numbers in [0, 1], got {quantiles!r}")
    if generator is not None and not isinstance(generator, torch.Generator):
        raise InputTypeError(f"generator must be a torch.Generator, got {type(generator).__name__}")
    return values


def _directions_across(u: Tensor, k: int, generator: Optional[torch.Generator], scratch: Tensor) -> Tensor:
    """k random unit directions (m, k, D) per sample, orthogonal to its unit step u (m, 1, D), float64;
    `scratch` (m, k, D) float64 on their device holds the products (its values are overwritten)."""
    m, _, d = u.shape
    device = scratch.device
    drawn_on = generator.device if generator is not None else device
    # drawn in float32 (3.5x faster than float64 on the CPU, where the draw cost more than all the rest),
    # projected and normalized in float64
    dirs = torch.randn(m, k, d, generator=generator, dtype=torch.float32, device=drawn_on).to(device, torch.float64)
    along = torch.mul(dirs, u, out=scratch).sum(2, keepdim=True)  # (dirs * u).sum(2)
    dirs.sub_(torch.mul(along, u, out=scratch))  # in place: the same values as dirs - along * u
    return dirs.div_(dirs.norm(dim=2, keepdim=True))


def width_along_path(
    model: torch.nn.Module, result: TraversalResult, radii: Sequence[float], **kw: Any
) -> Dict[str, Tensor]:
    """width_profile at every recorded iterate of a traversal (record_every > 0), the step direction
    being the move to the next recorded iterate.

    Args:
        model: classifier returning logits for images in [0, 1] (after the optional mean/std).
        result: a `TraversalResult` recorded with `record_every` > 0.
        radii: distances from each iterate (R values).
        **kw: the keywords of `width_profile` (k, quantiles, generator, mean, std, chunk_bytes, precision).

    Returns:
        {"radii": (R,), "iterations": (S,), "low"/"high": (S, N, R)} over the S recorded iterates that
        have a successor.
    """
    if not hasattr(result, "trace_images") or not hasattr(result, "trace_iterations"):
        raise InputTypeError(f"result must be a TraversalResult, got {type(result).__name__}")
    if result.trace_images is None or result.trace_iterations is None or result.trace_images.shape[0] < 2:
        raise InputError("width_along_path needs a traversal recorded with record_every > 0")
    images = result.trace_images
    device = result.images.device
    label = result.label.to(device)
    low, high, out = [], [], None
    for s in range(images.shape[0] - 1):
        x = images[s].to(device)
        out = width_profile(model, x, images[s + 1].to(device) - x, label, radii, **kw)
        low.append(out["low"])
        high.append(out["high"])
    assert out is not None  # at least two recorded iterates, checked above
    return {
        "radii": out["radii"],
        "iterations": result.trace_iterations[:-1],
        "low": torch.stack(low),
        "high": torch.stack(high),
    }
