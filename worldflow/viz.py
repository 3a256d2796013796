"""Writing things people look at: image grids (PNG), videos (GIF or MP4), all written atomically."""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
from PIL import Image

from worldflow.errors import DataError


def to_uint8(x) -> np.ndarray:
    """Map a float array/tensor in [-1, 1] (channels first or last) to uint8 channels-last."""
    if hasattr(x, "detach"):
        x = x.detach().float().cpu().numpy()
    x = np.asarray(x)
    if x.dtype == np.uint8:
        return x
    if x.ndim >= 3 and x.shape[-3] in (1, 3) and x.shape[-1] not in (1, 3):
        x = np.moveaxis(x, -3, -1)
    return np.clip((x + 1.0) * 127.5 + 0.5, 0, 255).astype(np.uint8)


def make_grid(images: np.ndarray, cols: int | None = None, pad: int = 2) -> np.ndarray:
    """(N, H, W, C) uint8 -> one (rows*H, cols*W, C) image with `pad` pixels between tiles."""
    n, h, w, c = images.shape
    cols = cols or math.ceil(math.sqrt(n))
    rows = math.ceil(n / cols)
    grid = np.full((rows * (h + pad) + pad, cols * (w + pad) + pad, c), 255, np.uint8)
    for i, img in enumerate(images):
        r, q = divmod(i, cols)
        grid[pad + r * (h + pad) : pad + r * (h + pad) + h, pad + q * (w + pad) : pad + q * (w + pad) + w] = (
            img
        )
    return grid


def check_output_path(path: str | Path, suffixes: tuple[str, ...] = ()) -> Path:
    """Create the folder of `path` and check it is writable (and the suffix, if given), or raise DataError
    naming it: call before long work so a bad output path fails first."""
    path = Path(path)
    if suffixes and path.suffix not in suffixes:
        raise DataError(f"output path {path} must end in {' or '.join(suffixes)}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise DataError(f"cannot create output folder {path.parent}: {e}") from e
    if not os.access(path.parent, os.W_OK):
        raise DataError(f"output folder {path.parent} is not writable")
    return path


def _atomic_target(path: str | Path) -> tuple[Path, Path]:
    path = check_output_path(path)
    return path, path.with_name(f".{path.stem}.tmp{path.suffix}")


def save_image(image: np.ndarray, path: str | Path) -> Path:
    """Save an (H, W, C) uint8 image atomically (PNG/JPEG by suffix)."""
    path, tmp = _atomic_target(path)
    img = image[..., 0] if image.shape[-1] == 1 else image
    Image.fromarray(img).save(tmp)
    os.replace(tmp, path)
    return path


def save_image_grid(images, path: str | Path, cols: int | None = None) -> Path:
    """images: (N, C, H, W) in [-1, 1] or (N, H, W, C) uint8."""
    return save_image(make_grid(to_uint8(images), cols), path)


def save_video(frames, path: str | Path, fps: int = 6) -> Path:
    """frames: (T, H, W, C) uint8 or (T, C, H, W) in [-1, 1]. `.gif` or `.mp4` by suffix."""
    import imageio.v3 as iio

    frames = to_uint8(frames)
    path, tmp = _atomic_target(path)
    if path.suffix == ".gif":
        iio.imwrite(tmp, frames, extension=".gif", duration=1000 / fps, loop=0)
    elif path.suffix == ".mp4":
        # libx264 needs even sizes; pad by one pixel where needed.
        t, h, w, c = frames.shape
        frames = np.pad(frames, ((0, 0), (0, h % 2), (0, w % 2), (0, 0)))
        import imageio.v2 as iio2

        iio2.mimwrite(tmp, list(frames), format="FFMPEG", fps=fps, codec="libx264", macro_block_size=1)
    else:
        raise DataError(f"video path {path} must end in .gif or .mp4")
    os.replace(tmp, path)
    return path


def save_video_grid(videos, path: str | Path, cols: int | None = None, fps: int = 6) -> Path:
    """videos: (N, T, C, H, W) in [-1, 1] or (N, T, H, W, C) uint8 -> one video of grids."""
    v = to_uint8(videos)
    frames = np.stack([make_grid(v[:, i], cols) for i in range(v.shape[1])])
    return save_video(frames, path, fps)
