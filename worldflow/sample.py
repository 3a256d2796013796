"""python -m worldflow.sample ckpt=<run or checkpoint folder> [num=16 steps=50 method=heun cfg_scale=1.5 out=x.png]

Pretrained checkpoints: image grids (PNG) or videos of grids (GIF/MP4) from the EMA weights.
World-model checkpoints: open-loop prediction on held-out episodes (`num` windows, `steps` Euler steps):
frames.gif (truth above prediction), actions.png and openloop.json (PSNR/SSIM per horizon step, action error).
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
    if meta.get("kind") == "worldmodel":
        return open_loop(cfg, model, meta)
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


def open_loop(cfg: SampleCLI, model, meta: dict) -> None:
    """World-model checkpoints: open-loop prediction on the held-out episodes it was trained beside."""
    from worldflow.data.actions import ActionStats
    from worldflow.data.cache import EpisodeCache
    from worldflow.data.windows import WindowDataset
    from worldflow.worldmodel.openloop import OpenLoopConfig, evaluate_open_loop

    wm = meta["worldmodel"]
    cache = EpisodeCache(meta["data"]["cache"])
    val = WindowDataset(
        cache, wm["context"], wm["horizon"], wm["action_horizon"], meta["data"]["val_episodes"],
        stats=ActionStats.from_dict(meta["action_stats"]),
        proprio=wm.get("proprio", False), terminate=wm.get("terminate", False),
    )  # fmt: skip
    out = Path(cfg.out) if cfg.out else resolve(cfg.ckpt) / "openloop"
    evaluate_open_loop(model, val, OpenLoopConfig(windows=cfg.num, steps=cfg.steps, seed=cfg.seed), out)


if __name__ == "__main__":
    sys.exit(main())
