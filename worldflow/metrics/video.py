"""PSNR and SSIM for frames in [-1, 1] (computed on [0, 1]), per sample or per horizon step."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def psnr(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """(..., C, H, W) -> (...,) in dB, images mapped from [-1, 1] to [0, 1]."""
    mse = ((pred.float() - target.float()) / 2).pow(2).flatten(-3).mean(-1)
    return 10 * torch.log10(1.0 / mse.clamp_min(1e-10))


def _gaussian_window(size: int = 11, sigma: float = 1.5) -> torch.Tensor:
    x = torch.arange(size, dtype=torch.float32) - (size - 1) / 2
    g = torch.exp(-(x**2) / (2 * sigma**2))
    g = g / g.sum()
    return g[:, None] * g[None, :]


def ssim(pred: torch.Tensor, target: torch.Tensor, window: int = 11) -> torch.Tensor:
    """Wang et al. 2004 SSIM with an 11x11 Gaussian window (sigma 1.5), mean over channels and pixels.
    (..., C, H, W) -> (...,). Images smaller than the window use a window of their size."""
    lead = pred.shape[:-3]
    c, h, w = pred.shape[-3:]
    # float64: the variances are differences of nearly equal numbers
    x = ((pred.double() + 1) / 2).reshape(-1, c, h, w)
    y = ((target.double() + 1) / 2).reshape(-1, c, h, w)
    size = min(window, h, w)
    k = _gaussian_window(size).to(x.device, torch.float64)[None, None].expand(c, 1, size, size)
    blur = lambda z: F.conv2d(z, k, groups=c)  # noqa: E731
    mu_x, mu_y = blur(x), blur(y)
    sxx = blur(x * x) - mu_x**2
    syy = blur(y * y) - mu_y**2
    sxy = blur(x * y) - mu_x * mu_y
    c1, c2 = 0.01**2, 0.03**2
    s = ((2 * mu_x * mu_y + c1) * (2 * sxy + c2)) / ((mu_x**2 + mu_y**2 + c1) * (sxx + syy + c2))
    return s.flatten(1).mean(1).reshape(lead).float()
