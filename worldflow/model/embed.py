"""Token embeddings: patch/tubelet tokens, fixed sin-cos positions, timesteps, labels, actions.

Patch embedding is a linear map on flattened patches, which equals DiT's strided convolution; keeping the
patchify outside the network lets objectives noise *tokens* with per-token timesteps (DESIGN.md §1).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from einops import rearrange
from torch import nn


def patchify(x: torch.Tensor, patch: int, tubelet: int) -> torch.Tensor:
    """(B, C, H, W) or (B, T, C, H, W) -> (B, N, tubelet*patch*patch*C), tokens in (t, h, w) order."""
    if x.ndim == 4:
        x = x.unsqueeze(1)
    return rearrange(x, "b (t pt) c (h ph) (w pw) -> b (t h w) (pt ph pw c)", pt=tubelet, ph=patch, pw=patch)


def unpatchify(tokens: torch.Tensor, shape: tuple[int, ...], patch: int, tubelet: int) -> torch.Tensor:
    """Inverse of `patchify`; `shape` is the sample shape (C, H, W) or (T, C, H, W) without batch."""
    video = len(shape) == 4
    t, c, h, w = shape if video else (1, *shape)
    x = rearrange(
        tokens,
        "b (t h w) (pt ph pw c) -> b (t pt) c (h ph) (w pw)",
        t=t // tubelet,
        h=h // patch,
        w=w // patch,
        pt=tubelet,
        ph=patch,
        pw=patch,
        c=c,
    )
    return x if video else x.squeeze(1)


def sincos_1d(dim: int, positions: np.ndarray) -> np.ndarray:
    """(M,) positions -> (M, dim) [sin | cos] embedding (MAE/DiT's get_1d_sincos_pos_embed_from_grid)."""
    omega = 1.0 / 10000 ** (np.arange(dim // 2, dtype=np.float64) / (dim / 2.0))
    out = np.einsum("m,d->md", positions.reshape(-1).astype(np.float64), omega)
    return np.concatenate([np.sin(out), np.cos(out)], axis=1)


def sincos_grid(dim: int, t: int, h: int, w: int) -> np.ndarray:
    """Fixed positions for a (t, h, w) token grid, flattened in (t, h, w) order -> (t*h*w, dim).

    A single frame (t == 1) uses the 2D embedding of DiT (half the channels each for h and w); videos
    split channels between time and the two spatial axes (3D, as in Latte/Open-Sora style models).
    """
    gt, gh, gw = np.meshgrid(np.arange(t), np.arange(h), np.arange(w), indexing="ij")
    if t == 1:
        return np.concatenate([sincos_1d(dim // 2, gh), sincos_1d(dim // 2, gw)], axis=1)
    d_hw = (3 * dim // 8) // 2 * 2
    d_t = dim - 2 * d_hw
    return np.concatenate([sincos_1d(d_t, gt), sincos_1d(d_hw, gh), sincos_1d(d_hw, gw)], axis=1)


class TimestepEmbedder(nn.Module):
    """Scalar t in [0, 1] -> D-vector: sinusoidal features of 1000·t -> MLP (DiT's TimestepEmbedder)."""

    def __init__(self, hidden: int, freq_dim: int = 256):
        super().__init__()
        self.freq_dim = freq_dim
        self.mlp = nn.Sequential(nn.Linear(freq_dim, hidden), nn.SiLU(), nn.Linear(hidden, hidden))

    def forward(self, t: torch.Tensor) -> torch.Tensor:  # (M,) -> (M, D)
        half = self.freq_dim // 2
        freqs = torch.exp(-math.log(10000) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
        args = 1000.0 * t.float()[:, None] * freqs[None]
        emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
        return self.mlp(emb.to(self.mlp[0].weight.dtype))


class LabelEmbedder(nn.Module):
    """Class label -> D-vector; index `num_classes` is the null class used for classifier-free guidance."""

    def __init__(self, num_classes: int, hidden: int):
        super().__init__()
        self.num_classes = num_classes
        self.table = nn.Embedding(num_classes + 1, hidden)

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        return self.table(y)
