"""python -m worldflow.sample ckpt=<run or checkpoint folder> [num=16 steps=50 method=heun cfg_scale=1.5 out=x.png]

Image grids (PNG) or videos of grids (GIF/MP4) from a checkpoint's EMA weights.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path

import hydra
import torch
from omegaconf import DictConfig

from worldflow.ckpt import from_checkpoint, resolve
from worldflow.config import CONFIG_DIR, entry_point, typed
from worldflow.errors import ConfigError
from worldflow.generate import generate, write_samples
from worldflow.train import pick_device


@dataclass
class SampleCLI:
    ckpt: str = "???"
    out: str | None = None
    num: int = 16
    steps: int = 50
    method: str = "euler"
    cfg_scale: float = 1.0
    cfg_interval: list[float] = field(default_factory=lambda: [0.0, 1.0])
    labels: list[int] | None = None
    seed: int = 0
    ema: bool = True
    device: str = "auto"
    fps: int = 6


@hydra.main(config_path=CONFIG_DIR, config_name="sample", version_base="1.3")
@entry_point
def main(raw: DictConfig) -> None:
    cfg = typed(SampleCLI, raw)
    if cfg.method not in ("euler", "heun", "sde"):
        raise ConfigError(f"method={cfg.method!r}; use euler, heun or sde")
    model, meta = from_checkpoint(cfg.ckpt, use_ema=cfg.ema, device=pick_device(cfg.device))
    labels = None
    if cfg.labels is not None:
        labels = torch.tensor([cfg.labels[i % len(cfg.labels)] for i in range(cfg.num)])
        if model.cfg.num_classes and (labels.min() < 0 or labels.max() > model.cfg.num_classes):
            raise ConfigError(
                f"labels={cfg.labels} outside 0..{model.cfg.num_classes} (the last is the null class)"
            )
    out = generate(
        model, cfg.num, labels, cfg.steps, cfg.method, cfg.cfg_scale, tuple(cfg.cfg_interval), cfg.seed
    )
    path = Path(cfg.out) if cfg.out else resolve(cfg.ckpt) / "samples"
    written = write_samples(out.float().cpu(), path, fps=cfg.fps)
    print(f"wrote {written} ({cfg.num} samples, step {meta['step']}, {cfg.method} x {cfg.steps})")


if __name__ == "__main__":
    sys.exit(main())
