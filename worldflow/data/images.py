"""Your images from a folder, and the folder indexing and resizing that video.py shares.

Layout (as torchvision's ImageFolder): `root/<class_name>/**/*.png|jpg|jpeg|webp`, class index = position of
the sub-folder's name in sorted order. A root with no class sub-folders but images directly inside is one
unlabelled set (num_classes = 0, y = 0). Where both exist, the loose files in root are ignored with a
warning, and sub-folders with no media (e.g. `logs/`) are skipped with a warning. Hidden files and folders
(`.name`) are ignored.

Images are loaded with PIL as RGB (or L for channels = 1), the central square is cropped and resized to
image_size (the same picture as "resize the shorter side, then center-crop"), and scaled to [-1, 1].
No random augmentation: items depend on the index alone.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import Dataset

from worldflow.errors import ConfigError, DataError

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp")
LUMINANCE = np.array([0.299, 0.587, 0.114], dtype=np.float32)  # ITU-R BT.601, as PIL's convert("L")


def _media(folder: Path, extensions: tuple[str, ...], recursive: bool) -> list[Path]:
    paths = folder.rglob("*") if recursive else folder.iterdir()
    return sorted(
        p
        for p in paths
        if p.suffix.lower() in extensions
        and p.is_file()
        and not any(part.startswith(".") for part in p.relative_to(folder).parts)
    )


def index_folder(root: str | Path, extensions: tuple[str, ...]) -> tuple[list[Path], list[int], list[str]]:
    """(files, labels, class names) under `root`, laid out as described in this module's docstring.

    class names are empty for an unlabelled root. DataError if root is missing or holds no matching file."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: folder does not exist" if not root.exists() else f"{root}: not a folder")
    subfolders = sorted(d for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    by_class = {d.name: _media(d, extensions, recursive=True) for d in subfolders}
    loose = _media(root, extensions, recursive=False)
    names = [name for name, files in by_class.items() if files]
    if not names:
        if not loose:
            raise DataError(f"{root}: no {'/'.join(extensions)} files in the folder or its sub-folders")
        return loose, [0] * len(loose), []
    if loose:
        warnings.warn(f"{root}: ignoring {len(loose)} files next to the class sub-folders", stacklevel=3)
    if len(names) < len(by_class):
        empty = sorted(set(by_class) - set(names))
        warnings.warn(
            f"{root}: skipping sub-folders with no {'/'.join(extensions)} files: {empty}", stacklevel=3
        )
    files = [f for name in names for f in by_class[name]]
    labels = [label for label, name in enumerate(names) for _ in by_class[name]]
    return files, labels, names


def to_unit(pixels: np.ndarray) -> torch.Tensor:
    """uint8 [0, 255] or float [0, 1] pixels (..., H, W, C) -> float32 (..., C, H, W) in [-1, 1]."""
    x = torch.from_numpy(np.ascontiguousarray(pixels)).movedim(-1, -3)
    return x.float() / 127.5 - 1.0 if x.dtype == torch.uint8 else x.float() * 2.0 - 1.0


def to_grey(rgb: np.ndarray) -> np.ndarray:
    """(..., 3) RGB -> (..., 1) luminance, keeping uint8 or float."""
    grey = (rgb @ LUMINANCE)[..., None]
    return np.round(grey).astype(np.uint8) if rgb.dtype == np.uint8 else grey


def check_crop(crop: list[float]) -> tuple[float, float, float, float]:
    """`crop` as (top, left, height, width) fractions, or ConfigError naming robot.data.crop."""
    box = [float(v) for v in crop]
    if len(box) == 4 and np.isfinite(box).all():
        top, left, h, w = box
        if min(top, left) >= 0 and min(h, w) > 0 and top + h <= 1 + 1e-9 and left + w <= 1 + 1e-9:
            return top, left, h, w
    raise ConfigError(
        f"robot.data.crop={list(crop)!r}: expected [top, left, height, width] as fractions of the frame, "
        "each >= 0, height and width > 0, top + height <= 1 and left + width <= 1"
    )


def crop_window(height: int, width: int, crop: list[float] | None) -> tuple[slice, slice]:
    """Rows and columns of an (height, width) frame kept by `crop` = [top, left, height, width] as fractions of
    the frame (so one box fits a dataset's 256x320 frames and SimplerEnv's 512x640 alike); None keeps all.
    The one place for the crop that the episode cache applies before resizing and the world-model policy
    applies to the env's frames (robot.data.crop)."""
    if crop is None:
        return slice(0, height), slice(0, width)
    top, left, h, w = check_crop(crop)
    r0, r1 = round(top * height), round((top + h) * height)
    c0, c1 = round(left * width), round((left + w) * width)
    if r1 <= r0 or c1 <= c0:
        raise ConfigError(f"robot.data.crop={list(crop)!r} keeps no pixel of a {width}x{height} (WxH) frame")
    return slice(r0, r1), slice(c0, c1)


def fit_size(x: torch.Tensor, size: int, resize: bool, name: str) -> torch.Tensor:
    """Center-crop (..., C, H, W) to a square and resize it to size x size (bicubic, antialiased), or, with
    resize=False, DataError naming `name` unless it already is size x size."""
    h, w = x.shape[-2:]
    if (h, w) == (size, size):
        return x
    if not resize:
        raise DataError(f"{name}: frames are {w}x{h} (WxH), expected {size}x{size} (data.resize=false)")
    side = min(h, w)
    top, left = (h - side) // 2, (w - side) // 2
    x = x[..., top : top + side, left : left + side]
    lead = x.shape[:-3]
    x = F.interpolate(x.reshape(-1, *x.shape[-3:]), size=(size, size), mode="bicubic", antialias=True)
    return x.reshape(*lead, *x.shape[-3:]).clamp(-1.0, 1.0)  # bicubic overshoots at edges


def load_image(path: Path, channels: int) -> np.ndarray:
    """(H, W, C) uint8 pixels of the image at `path`; DataError naming the file if it cannot be decoded."""
    try:
        with Image.open(path) as image:
            # convert() decodes every pixel, so a truncated file fails here and not later in a worker.
            image = image.convert("L" if channels == 1 else "RGB")
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
        raise DataError(f"{path}: cannot read image ({e})") from e
    pixels = np.array(image)  # a writable copy: torch.from_numpy warns on PIL's read-only buffer
    return pixels[..., None] if pixels.ndim == 2 else pixels


class ImageFolder(Dataset):
    """Images under `root` (see the module docstring), indexed once at construction."""

    def __init__(self, root: str | Path, image_size: int, channels: int = 3, resize: bool = True):
        self.root, self.image_size, self.channels, self.resize = Path(root), image_size, channels, resize
        self.files, self.labels, self.class_names = index_folder(self.root, IMAGE_EXTENSIONS)
        self.num_classes = len(self.class_names)
        self.sample_shape = (channels, image_size, image_size)

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        path = self.files[index]
        x = fit_size(to_unit(load_image(path, self.channels)), self.image_size, self.resize, str(path))
        return {"x": x, "y": torch.tensor(self.labels[index], dtype=torch.int64)}
