"""Generating frames from a model: velocity functions over token groups, class-conditional sampling with
optional classifier-free guidance, and writing grids (images) or videos (clips) for people to look at."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from worldflow import flow
from worldflow.viz import save_image_grid, save_video_grid


def frames_velocity(
    model: nn.Module, y: torch.Tensor | None, cond: torch.Tensor | None = None
) -> flow.VelocityFn:
    """fn(x_tokens (B, N, P), t (B,)) -> velocity of the frame tokens (one uniform t for all tokens)."""

    def fn(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        out, _ = model({"frames": x}, t, y=y, cond=cond)
        return out["frames"]

    return fn


@torch.no_grad()
def generate(
    model: nn.Module,
    n: int,
    labels: torch.Tensor | None = None,
    steps: int = 50,
    method: str = "euler",
    cfg_scale: float = 1.0,
    cfg_interval: tuple[float, float] = (0.0, 1.0),
    seed: int = 0,
) -> torch.Tensor:
    """n samples (n, *sample_shape) in [-1, 1] (clamped). Labels cycle through the classes if not given."""
    model.eval()
    device = next(model.parameters()).device
    gen = torch.Generator(device="cpu").manual_seed(seed)
    n_tok, dim = model.groups["frames"]
    x1 = torch.randn(n, n_tok, dim, generator=gen).to(device)
    y = None
    if model.y_embedder is not None:
        y = labels if labels is not None else torch.arange(n) % model.cfg.num_classes
        y = y.to(device)
    fn = frames_velocity(model, y)
    if cfg_scale != 1.0 and y is not None:
        fn = flow.guided(fn, frames_velocity(model, model.null_label(n, device)), cfg_scale, cfg_interval)
    kw = {"generator": gen} if method == "sde" else {}
    tokens = flow.sample(fn, x1, method=method, steps=steps, **kw)
    return model.unpatchify(tokens).clamp(-1, 1)


def write_samples(samples: torch.Tensor, path: str | Path, fps: int = 6) -> Path:
    """(N, C, H, W) -> PNG grid; (N, T, C, H, W) -> GIF/MP4 of grids (by suffix; .gif default for video)."""
    path = Path(path)
    if samples.ndim == 5:
        return save_video_grid(
            samples, path.with_suffix(path.suffix if path.suffix in (".gif", ".mp4") else ".gif"), fps=fps
        )
    return save_image_grid(samples, path.with_suffix(".png"))
