"""python -m worldflow.sample ckpt=<run or checkpoint folder> [num=16 steps=50 method=heun cfg_scale=1.5 out=x.png]

Pretrained checkpoints: image grids (PNG) or videos of grids (GIF/MP4) from the EMA weights; with fd=N,
also the domain Fréchet distance of the `num` samples to N items of the checkpoint's own training data
(worldflow.metrics.fd), printed and written beside the grid as <out>.fd.json.
World-model checkpoints: open-loop prediction on held-out episodes (`num` windows, `steps` Euler steps):
frames.gif (truth above prediction), actions.png and openloop.json (PSNR/SSIM per horizon step, action error).
"""

from __future__ import annotations

import json
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
    fd: int = 0  # >0: domain FD of the samples against this many items of the checkpoint's training data
    fd_cache: str = "runs/fd_cache"  # the domain encoder, trained once per dataset, is cached here


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
    if cfg.fd > 0:
        value, floor = sample_fd(out.float().cpu(), meta, cfg.fd, cfg.fd_cache)
        report = {"fd": value, "fd_data": floor, "samples": cfg.num, "real": cfg.fd, "step": meta.get("step"),
                  "method": cfg.method, "steps": cfg.steps, "seed": cfg.seed}  # fmt: skip
        target = written.with_name(f"{written.stem}.fd.json")
        tmp = target.with_name(f".{target.name}.tmp")
        tmp.write_text(json.dumps(report, indent=1))
        tmp.replace(target)
        data_txt = f"{floor:.3f}" if floor is not None else "n/a"
        print(
            f"domain FD {value:.3f} ({cfg.num} samples against {cfg.fd} training items; as many other "
            f"training items: {data_txt}) -> {target}"
        )


def sample_fd(samples: torch.Tensor, meta: dict, real: int, cache_dir: str) -> tuple[float, float | None]:
    """Domain FD of samples to the first `real` items of the data the checkpoint was trained on, and the
    same FD of as many of the data's next items (None if the data has no more): what real data scores."""
    from worldflow.data import DataConfig, build_dataset, stack
    from worldflow.metrics.fd import DomainFD

    try:
        data_cfg = DataConfig(**meta["config"]["data"])
    except (KeyError, TypeError) as e:
        raise ConfigError(f"fd={real}: the checkpoint's meta.json names no usable training data ({e})") from e
    data = build_dataset(data_cfg)
    if len(data) < real:
        raise ConfigError(f"fd={real}: the checkpoint's training data has only {len(data)} items")
    real_x, real_y = stack(data, range(real))
    fd = DomainFD(real_x, real_y if data.num_classes else None, cache_dir)
    # the floor: as many other items of the same data, scored the same way
    other = range(real, min(len(data), real + len(samples)))
    floor = fd(stack(data, other)[0]) if len(other) > 1 else None
    return fd(samples), floor


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
        frame_gap=wm.get("frame_gap", 1),
    )  # fmt: skip
    out = Path(cfg.out) if cfg.out else resolve(cfg.ckpt) / "openloop"
    evaluate_open_loop(model, val, OpenLoopConfig(windows=cfg.num, steps=cfg.steps, seed=cfg.seed), out)


if __name__ == "__main__":
    sys.exit(main())
