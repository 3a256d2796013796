"""Your videos from a folder, as clips of `frames` frames taken every `frame_stride` frames.

Files: `.mp4 .avi .mov .mkv .webm .gif` (decoded with imageio), `.npy` arrays (T, H, W, C) and `.npz` files
with a "frames" array of that shape. Arrays are uint8 in [0, 255] or float in [0, 1], with C = data.channels;
decoded video is RGB, turned grey for channels = 1. Class sub-folders work as in images.py.

The index of (file, start frame) pairs — every start from which a whole clip fits — is built once at
construction from lengths and shapes alone (`.npy` memory-mapped, `.npz` array headers, video metadata).
`.npy` is the fast path: a clip reads only its frames. `.npz` and video files are decoded from the start up
to the clip's last frame for each item; convert large corpora to `.npy` for training.
"""

from __future__ import annotations

import warnings
import zipfile
from pathlib import Path

import imageio.v2 as iio2
import imageio.v3 as iio
import numpy as np
import torch
from torch.utils.data import Dataset

from worldflow.data.images import fit_size, index_folder, to_grey, to_unit
from worldflow.errors import DataError

DECODED_EXTENSIONS = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".gif")
VIDEO_EXTENSIONS = (*DECODED_EXTENSIONS, ".npy", ".npz")


def _npz_header(path: Path) -> tuple[tuple[int, ...], np.dtype]:
    """Shape and dtype of the "frames" array in an .npz, read from its header without decompressing it."""
    with zipfile.ZipFile(path) as archive:
        names = archive.namelist()
        if "frames.npy" not in names:
            keys = [n.removesuffix(".npy") for n in names]
            raise DataError(f'{path}: no "frames" array in the .npz (it holds {keys})')
        with archive.open("frames.npy") as f:
            version = np.lib.format.read_magic(f)
            read = (
                np.lib.format.read_array_header_1_0
                if version == (1, 0)
                else np.lib.format.read_array_header_2_0
            )
            shape, _, dtype = read(f)
    return shape, dtype


def _check_array(path: Path, shape: tuple[int, ...], dtype: np.dtype, channels: int) -> None:
    if len(shape) != 4:
        raise DataError(f"{path}: array has shape {shape}, expected 4 dimensions (T, H, W, C)")
    if shape[-1] != channels:
        raise DataError(f"{path}: array has {shape[-1]} channels (shape {shape}), data.channels={channels}")
    if dtype != np.uint8 and not np.issubdtype(dtype, np.floating):
        raise DataError(f"{path}: array dtype {dtype}; expected uint8 [0, 255] or float [0, 1]")


def _reason(error: Exception) -> str:
    """A one-line reason: ffmpeg errors carry its whole banner, of which the first and last lines matter."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    text = lines[0] if len(lines) < 2 else f"{lines[0]} ... {lines[-1]}"
    return f"{type(error).__name__}: {text}"


def probe(path: Path, channels: int) -> tuple[int, int, int]:
    """(frames, height, width) of the video or array at `path`; DataError naming it if unreadable or malformed."""
    suffix = path.suffix.lower()
    try:
        if suffix in (".npy", ".npz"):
            if suffix == ".npy":
                array = np.load(path, mmap_mode="r")
                shape, dtype = array.shape, array.dtype
            else:
                shape, dtype = _npz_header(path)
            _check_array(path, shape, dtype, channels)
            return shape[0], shape[1], shape[2]
        if suffix == ".gif":
            shape = iio.improps(path, index=None).shape  # (T, H, W, C)
            return shape[0], shape[1], shape[2]
        with iio2.get_reader(
            path
        ) as reader:  # ffmpeg: counting frames is exact, the metadata's nframes is not
            width, height = reader.get_meta_data()["size"]
            return reader.count_frames(), height, width
    except DataError:
        raise
    except Exception as e:  # numpy, zipfile, PIL and ffmpeg each raise their own types for a bad file
        raise DataError(f"{path}: cannot read video ({_reason(e)})") from e


def read_frames(path: Path, indices: np.ndarray, channels: int) -> np.ndarray:
    """Frames `indices` (ascending) of the file at `path` as (T, H, W, C) uint8 or float [0, 1]."""
    suffix = path.suffix.lower()
    try:
        if suffix == ".npy":
            frames = np.asarray(np.load(path, mmap_mode="r")[indices])
        elif suffix == ".npz":
            with np.load(path) as archive:
                frames = archive["frames"][indices]
        else:
            wanted, last, kept = set(indices.tolist()), int(indices[-1]), {}
            for i, frame in enumerate(iio.imiter(path)):
                if i in wanted:
                    kept[i] = frame
                if i == last:
                    break
            frames = np.stack([kept[i] for i in indices.tolist()])
    except Exception as e:  # as in probe(); a KeyError here means the file is shorter than its metadata said
        raise DataError(f"{path}: cannot read frames {indices.tolist()} ({_reason(e)})") from e
    if suffix in DECODED_EXTENSIONS:
        frames = frames[..., :3]  # GIFs may carry alpha
        if channels == 1:
            frames = to_grey(frames)
    elif frames.dtype != np.uint8:
        if not np.isfinite(frames).all():
            raise DataError(f"{path}: frames {indices.tolist()} hold NaN or infinite values")
        low, high = float(frames.min()), float(frames.max())
        if low < 0.0 or high > 1.0:
            raise DataError(
                f"{path}: float frames must lie in [0, 1], found values in [{low:.3g}, {high:.3g}]"
            )
    return frames


class VideoFolder(Dataset):
    """Clips from every file under `root` long enough for one (see the module docstring)."""

    def __init__(
        self,
        root: str | Path,
        image_size: int,
        frames: int = 8,
        frame_stride: int = 1,
        channels: int = 3,
        resize: bool = True,
    ):
        self.root, self.image_size, self.channels, self.resize = Path(root), image_size, channels, resize
        self.frames, self.frame_stride = frames, frame_stride
        self.files, self.labels, self.class_names = index_folder(self.root, VIDEO_EXTENSIONS)
        self.num_classes = len(self.class_names)
        self.sample_shape = (
            (channels, image_size, image_size) if frames == 1 else (frames, channels, image_size, image_size)
        )
        span = (frames - 1) * frame_stride + 1  # source frames one clip covers
        file_ids, starts, short = [], [], []
        for file_id, path in enumerate(self.files):
            length, height, width = probe(path, channels)
            if not resize and (height, width) != (image_size, image_size):
                raise DataError(
                    f"{path}: frames are {width}x{height}, expected {image_size}x{image_size} (data.resize=false)"
                )
            if length < span:
                short.append(f"{path.name} ({length})")
                continue
            file_ids.append(np.full(length - span + 1, file_id))
            starts.append(np.arange(length - span + 1))
        need = f"{span} frames for frames={frames}, frame_stride={frame_stride}"
        if short:
            warnings.warn(
                f"{self.root}: skipping {len(short)} files shorter than {need}: {short[:10]}", stacklevel=2
            )
        if not file_ids:
            raise DataError(f"{self.root}: no video is long enough for one clip ({need})")
        # Two int arrays rather than a list of tuples: millions of clips stay a few MB in every worker.
        self._file_ids, self._starts = np.concatenate(file_ids), np.concatenate(starts)

    def __len__(self) -> int:
        return len(self._starts)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        path = self.files[self._file_ids[index]]
        indices = self._starts[index] + self.frame_stride * np.arange(self.frames)
        pixels = read_frames(path, indices, self.channels)
        x = fit_size(to_unit(pixels), self.image_size, self.resize, str(path))  # (T, C, H, W)
        label = self.labels[self._file_ids[index]]
        return {"x": x[0] if self.frames == 1 else x, "y": torch.tensor(label, dtype=torch.int64)}
