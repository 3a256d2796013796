"""Embedded datasets that need no download: class-conditional shapes and bouncing-shape video clips.

A class is a (shape, palette) pair: class c draws shape `SHAPES[c % 5]` in palette `c // 5`, so 10 classes are
five shapes in two colour schemes and classes differ in outline and in colour. Position, size and the exact
colours are drawn per item from `np.random.default_rng((seed, index))`: an item is a pure function of
(seed, index), with no global RNG, as the trainer's exact resume needs. Labels are `index % num_classes`, so
every prefix of the dataset is class-balanced (the convergence study takes its probe sets as prefixes).

MovingShapes is Moving MNIST (Srivastava et al. 2015) with coloured shapes: 1–2 shapes move at constant
velocity and bounce off the walls; the label is the first shape's class, and that shape is drawn on top so it
is never hidden.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import Dataset

from worldflow.data.images import to_grey, to_unit
from worldflow.errors import ConfigError

SHAPES = ("circle", "square", "triangle", "cross", "ring")
# (shape colour, background colour) in RGB [0, 1]; the luminances differ too, so classes stay apart in grey.
PALETTES = np.array(
    [
        [[0.90, 0.15, 0.15], [0.05, 0.08, 0.30]],  # red on navy
        [[0.25, 0.90, 0.30], [0.30, 0.08, 0.08]],  # green on maroon
        [[0.95, 0.85, 0.15], [0.45, 0.45, 0.45]],  # yellow on grey
        [[0.15, 0.35, 0.95], [0.90, 0.88, 0.75]],  # blue on cream
    ],
    dtype=np.float32,
)
MAX_CLASSES = len(SHAPES) * len(PALETTES)
COLOUR_JITTER = 0.1  # per channel, so a class is a colour range, not one colour


def shape_mask(shape: int, dx: np.ndarray, dy: np.ndarray, radius: float) -> np.ndarray:
    """Boolean mask of `SHAPES[shape]` centred at offset 0 and fitting in a box of half-side `radius`;
    dx, dy are pixel offsets from the centre (any broadcastable shapes, y pointing down)."""
    name = SHAPES[shape]
    if name == "circle":
        return dx**2 + dy**2 <= radius**2
    if name == "square":
        return np.maximum(np.abs(dx), np.abs(dy)) <= 0.8 * radius
    if name == "triangle":  # apex up at dy = -radius, base at dy = 0.7 radius
        return (dy <= 0.7 * radius) & (np.abs(dx) <= 0.6 * (dy + radius))
    if name == "cross":
        bar = radius / 3
        return ((np.abs(dx) <= bar) & (np.abs(dy) <= radius)) | ((np.abs(dy) <= bar) & (np.abs(dx) <= radius))
    if name == "ring":
        d2 = dx**2 + dy**2
        return (d2 <= radius**2) & (d2 >= (0.55 * radius) ** 2)
    raise ValueError(f"unknown shape index {shape}")


def bounce(start: np.ndarray, velocity: np.ndarray, t: np.ndarray, low: float, high: float) -> np.ndarray:
    """Position at times `t` of a point moving from `start` at `velocity` and reflecting off `low` and `high`:
    the unfolded path folded back into the box (a triangle wave), so any frame is computed in closed form.
    start, velocity: (..., D); t: (T,) -> (T, ..., D)."""
    span = high - low
    unfolded = start - low + velocity * t.reshape(-1, *([1] * start.ndim))
    return low + span - np.abs(span - np.mod(unfolded, 2 * span))


def _check_classes(num_classes: int, channels: int) -> None:
    if not 1 <= num_classes <= MAX_CLASSES:
        raise ConfigError(f"data.num_classes={num_classes}: synthetic data has 1 to {MAX_CLASSES} classes")
    if channels not in (1, 3):
        raise ConfigError(f"data.channels={channels} must be 1 or 3")


def _colours(rng: np.random.Generator, label: int) -> tuple[np.ndarray, np.ndarray]:
    """(shape colour, background colour) of class `label`, jittered."""
    base = PALETTES[label // len(SHAPES)]
    jitter = rng.uniform(-COLOUR_JITTER, COLOUR_JITTER, size=(2, 3)).astype(np.float32)
    shape_colour, background = np.clip(base + jitter, 0.0, 1.0)
    return shape_colour, background


def _to_tensor(rgb: np.ndarray, channels: int) -> torch.Tensor:
    """(..., H, W, 3) in [0, 1] -> float32 (..., C, H, W) in [-1, 1]."""
    return to_unit(to_grey(rgb) if channels == 1 else rgb)


class SyntheticImages(Dataset):
    """`num_samples` images of one shape on a tinted background; class = (shape, palette)."""

    def __init__(
        self, num_samples: int, image_size: int, num_classes: int = 10, channels: int = 3, seed: int = 0
    ):
        _check_classes(num_classes, channels)
        self.num_samples, self.image_size, self.channels, self.seed = num_samples, image_size, channels, seed
        self.num_classes = num_classes
        self.sample_shape = (channels, image_size, image_size)
        self._pixels = np.arange(image_size, dtype=np.float32) + 0.5  # pixel centres

    def __len__(self) -> int:
        return self.num_samples

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        if not 0 <= index < self.num_samples:
            raise IndexError(f"index {index} out of range for {self.num_samples} samples")
        rng = np.random.default_rng((self.seed, index))
        label = index % self.num_classes
        size = self.image_size
        radius = rng.uniform(0.2, 0.35) * size
        cx, cy = rng.uniform(radius, size - radius, size=2)
        shape_colour, background = _colours(rng, label)
        mask = shape_mask(label % len(SHAPES), self._pixels[None, :] - cx, self._pixels[:, None] - cy, radius)
        image = np.where(mask[..., None], shape_colour, background)  # (H, W, 3)
        return {"x": _to_tensor(image, self.channels), "y": torch.tensor(label, dtype=torch.int64)}


@dataclass
class Sprite:
    shape: int  # index into SHAPES
    colour: np.ndarray  # (3,) RGB in [0, 1]
    radius: float  # pixels
    start: np.ndarray  # (2,) centre (x, y) at frame 0, pixels
    velocity: np.ndarray  # (2,) pixels per source frame


@dataclass
class Scene:
    label: int
    background: np.ndarray  # (3,)
    sprites: list[Sprite]  # sprites[0] carries the label and is drawn last (on top)


class MovingShapes(Dataset):
    """`num_samples` clips of `frames` frames of 1–2 shapes bouncing in an image_size box.

    `frame_stride` k samples every k-th frame of the underlying motion (clips cover k times the distance).
    frames == 1 gives single images (C, H, W).
    """

    def __init__(
        self,
        num_samples: int,
        image_size: int,
        frames: int = 8,
        num_classes: int = 10,
        channels: int = 3,
        seed: int = 0,
        frame_stride: int = 1,
    ):
        _check_classes(num_classes, channels)
        self.num_samples, self.image_size, self.frames, self.frame_stride = (
            num_samples,
            image_size,
            frames,
            frame_stride,
        )
        self.channels, self.seed, self.num_classes = channels, seed, num_classes
        self.sample_shape = (
            (channels, image_size, image_size) if frames == 1 else (frames, channels, image_size, image_size)
        )
        self._pixels = np.arange(image_size, dtype=np.float32) + 0.5

    def __len__(self) -> int:
        return self.num_samples

    def scene(self, index: int) -> Scene:
        """The random draws behind item `index` (exposed so tests and plots can check the motion)."""
        if not 0 <= index < self.num_samples:
            raise IndexError(f"index {index} out of range for {self.num_samples} samples")
        rng = np.random.default_rng((self.seed, index))
        label = index % self.num_classes
        count = int(rng.integers(1, 3))
        classes = [label] + [int(c) for c in rng.integers(self.num_classes, size=count - 1)]
        sprites, backgrounds = zip(*(self._sprite(rng, cls) for cls in classes))
        return Scene(label, backgrounds[0], list(sprites))

    def _sprite(self, rng: np.random.Generator, cls: int) -> tuple[Sprite, np.ndarray]:
        """A sprite of class `cls` and the background colour of its palette."""
        colour, background = _colours(rng, cls)
        size = self.image_size
        radius = rng.uniform(0.12, 0.22) * size
        start = rng.uniform(radius, size - radius, size=2)
        angle, speed = rng.uniform(0, 2 * np.pi), rng.uniform(0.04, 0.1) * size
        velocity = speed * np.array([np.cos(angle), np.sin(angle)])
        return Sprite(cls % len(SHAPES), colour, radius, start, velocity), background

    def centres(self, sprite: Sprite) -> np.ndarray:
        """(T, 2) centre (x, y) of `sprite` in each frame of the clip."""
        t = np.arange(self.frames, dtype=np.float64) * self.frame_stride
        return bounce(sprite.start, sprite.velocity, t, sprite.radius, self.image_size - sprite.radius)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        scene = self.scene(index)
        size = self.image_size
        video = np.broadcast_to(scene.background, (self.frames, size, size, 3)).copy()  # (T, H, W, 3)
        for sprite in reversed(scene.sprites):
            centres = self.centres(sprite).astype(np.float32)
            dx = self._pixels[None, None, :] - centres[:, 0, None, None]  # (T, 1, W)
            dy = self._pixels[None, :, None] - centres[:, 1, None, None]  # (T, H, 1)
            video[shape_mask(sprite.shape, dx, dy, sprite.radius)] = sprite.colour
        x = _to_tensor(video, self.channels)
        return {"x": x[0] if self.frames == 1 else x, "y": torch.tensor(scene.label, dtype=torch.int64)}
