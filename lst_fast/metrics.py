"""Distances between LST outputs and their targets (the paper's Table 1): l2, RMS, l_inf and SSIM."""

from __future__ import annotations

from typing import Dict, Tuple

import torch
from torch import Tensor

from lst_fast.backends._extension import has_native_kernel
from lst_fast.errors import EnvironmentFault, InputError, InputTypeError

# Outputs per band product. Each blurred value costs BLOCK + window - 1 multiply-adds (a full band matrix costs
# the image's side: 224 at 224 px), and the products stay large enough for BLAS; 16, 24 and 32 measured alike.
_BLOCK = 16
# The pairs blurred together: about this many bytes of working set, so the CPU keeps them in cache; on a GPU
# larger chunks only mean fewer kernel launches.
_CHUNK_BYTES = {"cpu": 8 << 20}
_DEVICE_CHUNK_BYTES = 512 << 20


def _gaussian_blocks(block: int, window: int, sigma: float, device: torch.device) -> Tensor:
    """(block + window - 1, block) float64: column j holds the normalized 1-D Gaussian at rows j .. j + window
    - 1, so `rows @ band` blurs `block` consecutive valid (unpadded) windows of `block + window - 1` inputs.

    The 2-D Gaussian is the outer product of two 1-D ones, so blurring along W then along H with such
    products equals the 11x11 window (to 1e-15 in float64)."""
    g = _gaussian(window, sigma, device)
    rows = torch.arange(window, device=device)[:, None] + torch.arange(block, device=device)[None, :]
    band = torch.zeros(block + window - 1, block, device=device, dtype=torch.float64)
    return band.scatter_(0, rows, g[:, None].expand(window, block))


def _blur_blocks(maps: Tensor, window: int, band_h: Tensor, band_w: Tensor) -> Tensor:
    """The valid Gaussian blur of maps (P, H_pad, W_pad), block by block: (blocks_h, blocks_w, block_w, P,
    block_h), the output at row i * block_h + r and column j * block_w + c at [i, j, c, :, r]. The layout
    is the band products' own (no transposes copied): the callers only average over positions."""
    planes, pad_h, pad_w = maps.shape
    block_h, block_w = band_h.shape[1], band_w.shape[1]
    blocks_h, blocks_w = (pad_h - window + 1) // block_h, (pad_w - window + 1) // block_w
    rows = maps.view(planes * pad_h, pad_w)
    along_w = torch.empty(blocks_w, block_w, planes * pad_h, dtype=maps.dtype, device=maps.device)
    band_w_t = band_w.T
    for j in range(blocks_w):  # (block_w, in) @ (in, planes * pad_h), the input read in place through its stride
        torch.mm(band_w_t, rows[:, j * block_w : j * block_w + block_w + window - 1].T, out=along_w[j])
    columns = along_w.view(blocks_w * block_w * planes, pad_h)
    both = torch.empty(blocks_h, blocks_w * block_w * planes, block_h, dtype=maps.dtype, device=maps.device)
    for i in range(blocks_h):
        torch.mm(columns[:, i * block_h : i * block_h + block_h + window - 1], band_h, out=both[i])
    return both.view(blocks_h, blocks_w, block_w, planes, block_h)


def ssim(x: Tensor, y: Tensor, data_range: float = 1.0, window: int = 11, sigma: float = 1.5) -> Tensor:
    """Structural similarity per image (N,), Gaussian window, as Wang et al. 2004 and scikit-image's
    structural_similarity(gaussian_weights=True, sigma=1.5, use_sample_covariance=False): statistics
    over the valid (unpadded) windows, averaged over positions and channels.

    Computed in float64 whatever the input dtype: the variances are differences E[x^2] - E[x]^2, which in
    float32 cancel to errors of 6e-5 in SSIM on a black-and-white image (flat regions, where both terms
    are large and the variance 0); float64 agrees with scikit-image to 1e-14.

    On the CPU it runs the compiled kernel lst_fast_kernels::ssim (csrc/cpu/ssim_kernel.cpp: the blur tap
    by tap, 11 multiply-adds per output and side, one plane at a time in cache; 1.1 ms a 224-px colour pair
    on 2 cores, 2.6x faster than the PyTorch version; bench/RESULTS.md). Elsewhere, or without the compiled kernels,
    the separable blur runs as block-banded matrix products in PyTorch (26 multiply-adds per output), a
    few pairs at a time so that they stay in cache. Both agree to about 1e-15.

    Args:
        x: images (N, C, H, W), floating point.
        y: images of the same shape.
        data_range: the range of the pixel values (1 for images in [0, 1]).
        window: side of the Gaussian window, in pixels.
        sigma: standard deviation of the Gaussian window.

    Returns:
        (N,) SSIM per image pair, float64.
    """
    if not isinstance(x, Tensor) or not isinstance(y, Tensor):
        raise InputTypeError(f"ssim needs two tensors, got {type(x).__name__} and {type(y).__name__}")
    if not x.is_floating_point() or not y.is_floating_point():
        raise InputTypeError(f"ssim needs floating-point images, got {x.dtype} and {y.dtype}")
    if x.shape != y.shape or x.dim() != 4:
        raise InputError(f"ssim needs two (N, C, H, W) tensors of one shape, got {tuple(x.shape)} and {tuple(y.shape)}")
    if x.device != y.device:
        raise InputError(f"ssim needs both images on one device, got {x.device} and {y.device}")
    if isinstance(window, bool) or not isinstance(window, int) or window < 1:
        raise InputError(f"ssim's window must be a positive number of pixels, got {window!r}")
    if not sigma > 0:
        raise InputError(f"ssim's sigma must be positive, got {sigma!r}")
    if min(x.shape[-2:]) < window:
        raise InputError(f"ssim needs images of at least {window}x{window} pixels, got {tuple(x.shape[-2:])}")
    if x.device.type == "cpu" and has_native_kernel("ssim", "cpu"):
        c1, c2 = _stabilizers(data_range)
        dtype = torch.float64 if torch.float64 in (x.dtype, y.dtype) else torch.float32
        weights = _gaussian(window, sigma, x.device)
        x, y = x.to(dtype).contiguous(), y.to(dtype).contiguous()
        out: Tensor = torch.ops.lst_fast_kernels.ssim(x, y, weights, c1, c2)
        return out
    return _ssim_blocks(x, y, data_range, window, sigma)


def _stabilizers(data_range: float) -> Tuple[float, float]:
    """SSIM's c1 and c2 (Wang et al.: K1 = 0.01, K2 = 0.03 of the data range, squared)."""
    return (0.01 * data_range) ** 2, (0.03 * data_range) ** 2


def _ssim_fake(x: Tensor, y: Tensor, window: Tensor, c1: float, c2: float) -> Tensor:
    return x.new_empty((x.shape[0],), dtype=torch.float64)


if has_native_kernel("ssim", "cpu"):  # so that torch.compile and opcheck can trace the kernel
    torch.library.register_fake("lst_fast_kernels::ssim", _ssim_fake)


def _gaussian(window: int, sigma: float, device: torch.device) -> Tensor:
    """The normalized 1-D Gaussian window (window,), float64."""
    coords = torch.arange(window, device=device, dtype=torch.float64) - (window - 1) / 2
    g = torch.exp(-(coords**2) / (2 * sigma**2))
    return g / g.sum()


def _ssim_blocks(x: Tensor, y: Tensor, data_range: float, window: int, sigma: float) -> Tensor:
    """ssim in PyTorch (the fallback and the compiled kernel's oracle): the separable blur as block-banded
    float64 matrix products, a few pairs at a time."""
    c1, c2 = _stabilizers(data_range)
    n, channels, h, w = x.shape
    out_h, out_w = h - window + 1, w - window + 1
    block_h, block_w = min(_BLOCK, out_h), min(_BLOCK, out_w)
    blocks_h, blocks_w = -(-out_h // block_h), -(-out_w // block_w)
    pad_h, pad_w = blocks_h * block_h + window - 1, blocks_w * block_w + window - 1
    band_h = _gaussian_blocks(block_h, window, sigma, x.device)
    band_w = band_h if block_w == block_h else _gaussian_blocks(block_w, window, sigma, x.device)
    result = torch.empty(n, dtype=torch.float64, device=x.device)
    if n == 0:
        return result
    # per pair: the 4 maps, the blur along W and the blur along both, float64
    pair_bytes = 3 * 4 * channels * pad_h * pad_w * 8
    chunk = max(1, min(n, _CHUNK_BYTES.get(x.device.type, _DEVICE_CHUNK_BYTES) // pair_bytes))
    # x, y, x^2 + y^2 + c1 + c2, 2xy + c1 + c2 per pair; the weights sum to 1, so the last two blur to
    # mu_x^2 + mu_y^2 + c1 + (var_x + var_y + c2) and 2 mu_x mu_y + c1 + (2 cov + c2). The padding's outputs
    # are never averaged; c1 + c2 there keeps their denominators away from 0.
    constants = torch.tensor(c1 + c2, dtype=torch.float64, device=x.device)
    c1_tensor = torch.tensor(c1, dtype=torch.float64, device=x.device)
    maps = torch.zeros(chunk, 4, channels, pad_h, pad_w, dtype=torch.float64, device=x.device)
    maps[:, 2:] = constants
    extra_h, extra_w = blocks_h * block_h - out_h, blocks_w * block_w - out_w  # padded outputs at the ends
    for start in range(0, n, chunk):
        m = min(chunk, n - start)
        xm, ym, squares, products = (maps[:m, k, :, :h, :w] for k in range(4))
        xm.copy_(x[start : start + m])
        ym.copy_(y[start : start + m])
        torch.addcmul(constants, xm, xm, out=squares).addcmul_(ym, ym)
        torch.addcmul(constants, xm, ym, value=2, out=products)
        blurred = _blur_blocks(maps[:m].view(m * 4 * channels, pad_h, pad_w), window, band_h, band_w)
        mu_x, mu_y, squares, products = blurred.view(blocks_h, blocks_w, block_w, m, 4, channels, block_h).unbind(4)
        luminance = torch.addcmul(c1_tensor, mu_x, mu_y, value=2)  # 2 mu_x mu_y + c1
        luminance_scale = torch.addcmul(c1_tensor, mu_x, mu_x).addcmul_(mu_y, mu_y)  # mu_x^2 + mu_y^2 + c1
        structure = products.sub_(luminance)  # 2 cov + c2, in the blur's own buffer
        contrast = squares.sub_(luminance_scale)  # var_x + var_y + c2
        per_position = luminance.mul_(structure).div_(luminance_scale.mul_(contrast))
        total = per_position.sum((0, 1, 2, 5))
        # less the padded outputs: the last row block's extra rows, the last column block's extra columns,
        # and their corner, taken off twice
        extra_rows = per_position[-1, :, :, :, :, block_h - extra_h :]
        extra_columns = per_position[:, -1, block_w - extra_w :]
        total -= extra_rows.sum((0, 1, 4)) + extra_columns.sum((0, 1, 4))
        total += extra_rows[-1, block_w - extra_w :].sum((0, 3))
        result[start : start + m] = total.mean(1) / (out_h * out_w)
    return result


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
