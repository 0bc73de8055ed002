"""Distances between LST outputs and their targets (the paper's Table 1): l2, RMS, l_inf and SSIM."""

from __future__ import annotations

from typing import Dict

import torch
from torch import Tensor

from lst_fast.errors import EnvironmentFault, InputError, InputTypeError


def _gaussian_band(size: int, window: int, sigma: float, device: torch.device, dtype: torch.dtype) -> Tensor:
    """(size - window + 1, size): row i holds the normalized 1-D Gaussian at columns i .. i + window - 1, so
    `band @ t` blurs the rows of t over the valid (unpadded) windows.

    The 2-D Gaussian is the outer product of two 1-D ones, so blurring along H then along W with two such
    matrix products equals the depthwise 11x11 convolution (to 1e-15 in float64), through BLAS: 35x faster
    on 224 px images on the CPU, where float64 depthwise convolutions have no fast kernel."""
    coords = torch.arange(window, device=device, dtype=dtype) - (window - 1) / 2
    g = torch.exp(-(coords**2) / (2 * sigma**2))
    g = g / g.sum()
    rows = size - window + 1
    columns = torch.arange(rows, device=device)[:, None] + torch.arange(window, device=device)[None, :]
    return torch.zeros(rows, size, device=device, dtype=dtype).scatter_(1, columns, g.expand(rows, window))


def ssim(x: Tensor, y: Tensor, data_range: float = 1.0, window: int = 11, sigma: float = 1.5) -> Tensor:
    """Structural similarity per image (N,), Gaussian window, as Wang et al. 2004 and scikit-image's
    structural_similarity(gaussian_weights=True, sigma=1.5, use_sample_covariance=False): statistics
    over the valid (unpadded) windows, averaged over positions and channels.

    Args:
        x: images (N, C, H, W), floating point.
        y: images of the same shape.
        data_range: the range of the pixel values (1 for images in [0, 1]).
        window: side of the Gaussian window, in pixels.
        sigma: standard deviation of the Gaussian window.

    Returns:
        (N,) SSIM per image pair.
    """
    if not isinstance(x, Tensor) or not isinstance(y, Tensor):
        raise InputTypeError(f"ssim needs two tensors, got {type(x).__name__} and {type(y).__name__}")
    if not x.is_floating_point() or not y.is_floating_point():
        raise InputTypeError(f"ssim needs floating-point images, got {x.dtype} and {y.dtype}")
    if x.shape != y.shape or x.dim() != 4:
        raise InputError(f"ssim needs two (N, C, H, W) tensors of one shape, got {tuple(x.shape)} and {tuple(y.shape)}")
    if min(x.shape[-2:]) < window:
        raise InputError(f"ssim needs images of at least {window}x{window} pixels, got {tuple(x.shape[-2:])}")
    x, y = x.to(torch.float64), y.to(torch.float64)
    along_h = _gaussian_band(x.shape[-2], window, sigma, x.device, x.dtype)
    along_w = _gaussian_band(x.shape[-1], window, sigma, x.device, x.dtype).T

    def blur(t: Tensor) -> Tensor:
        return along_h @ t @ along_w

    mu_x, mu_y = blur(x), blur(y)
    var_x = blur(x * x) - mu_x**2
    var_y = blur(y * y) - mu_y**2
    cov = blur(x * y) - mu_x * mu_y
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    s = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / ((mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2))
    return s.flatten(1).mean(1)


def distances(x: Tensor, target: Tensor) -> Dict[str, Tensor]:
    """Per-sample l2, RMS (l2 / sqrt(C*H*W)), l_inf and SSIM between images and their targets.

    Args:
        x: images (N, C, H, W), floating point, e.g. `TraversalResult.images`.
        target: their targets, of the same shape.

    Returns:
        {"l2", "rms", "linf", "ssim"}, each (N,); the first three in float64.
    """
    for name, value in (("x", x), ("target", target)):
        if not isinstance(value, Tensor) or value.dim() != 4 or not value.is_floating_point():
            got = f"{value.dtype} {tuple(value.shape)}" if isinstance(value, Tensor) else type(value).__name__
            raise InputError(f"distances needs {name} as a floating-point (N, C, H, W) tensor, got {got}")
    if x.shape != target.shape:
        raise InputError(f"distances needs x and target of one shape, got {tuple(x.shape)} and {tuple(target.shape)}")
    diff = (x.to(torch.float64) - target.to(torch.float64)).flatten(1)
    l2 = diff.norm(dim=1)
    return {
        "l2": l2,
        "rms": l2 / diff.shape[1] ** 0.5,
        "linf": diff.abs().amax(dim=1) if diff.shape[1] else l2,
        "ssim": ssim(x, target),
    }


def lpips_distance(x: Tensor, target: Tensor, net: str = "alex") -> Tensor:
    """LPIPS (Zhang et al. 2018) per image, from the `lpips` package and its pretrained weights.

    Raises RuntimeError saying what is missing when the package or its weights cannot be loaded
    (the weights come from the network on first use). x and target: (N, C, H, W) in [0, 1] with C 1
    (repeated to 3 channels) or 3; all N images go through the network in one batch.

    Args:
        x: images (N, C, H, W) in [0, 1].
        target: their targets, of the same shape.
        net: the `lpips` package's backbone ("alex", "vgg" or "squeeze").

    Returns:
        (N,) LPIPS distance per image pair.
    """
    if not isinstance(x, Tensor) or not isinstance(target, Tensor) or x.dim() != 4 or x.shape != target.shape:
        got = [tuple(t.shape) if isinstance(t, Tensor) else type(t).__name__ for t in (x, target)]
        raise InputError(
            f"lpips_distance needs x and target as (N, C, H, W) tensors of one shape, got {got[0]} and {got[1]}"
        )
    if x.shape[1] not in (1, 3):
        raise InputError(f"lpips_distance needs 1- or 3-channel images, got {x.shape[1]} channels")
    try:
        import lpips
    except ImportError:
        raise EnvironmentFault(
            "LPIPS needs the `lpips` package (pip install lpips) and its pretrained "
            f"{net} weights, which it downloads on first use"
        ) from None
    try:
        model = lpips.LPIPS(net=net, verbose=False).to(x.device).eval()
    except Exception as error:  # no network or no cached weights
        raise EnvironmentFault(
            f"could not load the LPIPS {net} weights ({error}); they download on first "
            "use, so run once with a network or copy them into the torch hub cache"
        ) from error
    images = [t.to(torch.float32) * 2 - 1 for t in (x, target)]  # LPIPS takes [-1, 1]
    if images[0].shape[1] == 1:
        images = [t.expand(-1, 3, -1, -1) for t in images]
    with torch.no_grad():
        distance: Tensor = model(*images)
    return distance.flatten()
