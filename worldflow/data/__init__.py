"""Pretraining data (DESIGN.md §0): images and video clips in, `{"x", "y"}` items out.

Every dataset built here returns `{"x": float32 in [-1, 1], (C, H, W) or (T, C, H, W), "y": int64 scalar}`,
has `num_classes` (0 if unlabelled) and `sample_shape`, and its items are a pure function of (seed, index) so
a resumed run sees exactly the data it would have seen.

  synthetic_images  class-conditional shapes, generated (worldflow.data.synthetic)
  moving_shapes     bouncing coloured shapes as video clips, generated (worldflow.data.synthetic)
  image_folder      root/<class>/*.png|jpg|jpeg|webp or root/*.png... (worldflow.data.images)
  video_folder      root/[<class>/]*.mp4|gif|npy|npz (worldflow.data.video)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch.utils.data import Dataset

from worldflow.data.images import ImageFolder
from worldflow.data.synthetic import MovingShapes, SyntheticImages
from worldflow.data.video import VideoFolder
from worldflow.errors import ConfigError


@dataclass
class DataConfig:
    name: str = "moving_shapes"  # synthetic_images | moving_shapes | image_folder | video_folder
    root: str | None = None  # folder for image_folder / video_folder
    image_size: int = 32  # square output size (H = W)
    frames: int = 1  # 1 -> image samples (C,H,W); >1 -> video clips (T,C,H,W)
    frame_stride: int = 1  # video: take every k-th frame
    channels: int = 3
    num_samples: int = 4096  # synthetic datasets: length (items are generated from (seed, index))
    num_classes: int = 10  # synthetic: number of classes; folder datasets: from sub-folders
    seed: int = 0
    # folder datasets: resize/center-crop to image_size; if False, a size mismatch is a DataError naming the file
    resize: bool = True


def _synthetic_images(cfg: DataConfig) -> Dataset:
    if cfg.frames != 1:
        raise ConfigError(
            f"data.frames={cfg.frames}: synthetic_images makes single images; use moving_shapes"
        )
    return SyntheticImages(cfg.num_samples, cfg.image_size, cfg.num_classes, cfg.channels, cfg.seed)


def _moving_shapes(cfg: DataConfig) -> Dataset:
    return MovingShapes(
        cfg.num_samples, cfg.image_size, cfg.frames, cfg.num_classes, cfg.channels, cfg.seed, cfg.frame_stride
    )


def _image_folder(cfg: DataConfig) -> Dataset:
    if cfg.frames != 1:
        raise ConfigError(f"data.frames={cfg.frames}: image_folder makes single images; use video_folder")
    return ImageFolder(_root(cfg), cfg.image_size, cfg.channels, cfg.resize)


def _video_folder(cfg: DataConfig) -> Dataset:
    return VideoFolder(_root(cfg), cfg.image_size, cfg.frames, cfg.frame_stride, cfg.channels, cfg.resize)


# Plug-ins add a builder here (name -> function of the config), as lerobot registers its datasets.
DATASETS: dict[str, Callable[[DataConfig], Dataset]] = {
    "synthetic_images": _synthetic_images,
    "moving_shapes": _moving_shapes,
    "image_folder": _image_folder,
    "video_folder": _video_folder,
}


def _root(cfg: DataConfig) -> str:
    if not cfg.root:
        raise ConfigError(f"data.root is required for data.name={cfg.name!r}")
    return cfg.root


def _check(cfg: DataConfig) -> None:
    for key in ("image_size", "frames", "frame_stride", "num_samples"):
        if getattr(cfg, key) < 1:
            raise ConfigError(f"data.{key}={getattr(cfg, key)} must be >= 1")
    if cfg.channels not in (1, 3):
        raise ConfigError(f"data.channels={cfg.channels} must be 1 (grey) or 3 (RGB)")


def build_dataset(cfg: DataConfig) -> Dataset:
    """The dataset named by `cfg.name`; ConfigError for an unknown name or an invalid value."""
    if cfg.name not in DATASETS:
        raise ConfigError(f"unknown data.name={cfg.name!r}; valid names: {', '.join(sorted(DATASETS))}")
    _check(cfg)
    return DATASETS[cfg.name](cfg)


__all__ = [
    "DATASETS",
    "DataConfig",
    "ImageFolder",
    "MovingShapes",
    "SyntheticImages",
    "VideoFolder",
    "build_dataset",
]


def stack(dataset, indices) -> tuple[torch.Tensor, torch.Tensor]:
    """Items `indices` of a pretraining dataset as (x (N, ...), y (N,)) tensors."""
    items = [dataset[int(i)] for i in indices]
    return torch.stack([it["x"] for it in items]), torch.stack([it["y"] for it in items])
