"""`from_checkpoint(dir)`: a fine-tuned world model with its robot spec and action statistics, no Hydra."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from worldflow.ckpt import from_checkpoint as load_model
from worldflow.data.actions import ActionStats
from worldflow.errors import CheckpointError
from worldflow.model.dit import DiT
from worldflow.worldmodel.modes import WorldModelConfig


@dataclass
class WorldModel:
    model: DiT
    robot: dict  # the RobotConfig the model was trained for (dataset, action conventions, env)
    stats: ActionStats  # de-standardise predicted actions with these
    worldmodel: WorldModelConfig  # context / horizon / action horizon, proprio / terminate
    meta: dict
    proprio_stats: ActionStats | None = None  # standardise the proprioception with these (worldmodel.proprio)

    @property
    def image_size(self) -> int:
        return self.model.cfg.image_size


def from_checkpoint(path: str | Path, device: str | torch.device = "cpu", use_ema: bool = True) -> WorldModel:
    model, meta = load_model(path, use_ema=use_ema, device=device)
    if meta.get("kind") != "worldmodel":
        raise CheckpointError(f"{path} is a {meta.get('kind')!r} checkpoint, not a fine-tuned world model")
    try:
        wm = meta["worldmodel"]
        return WorldModel(
            model=model,
            robot=meta["robot"],
            stats=ActionStats.from_dict(meta["action_stats"]),
            # checkpoints written before worldmodel.residual existed predicted the frames themselves
            worldmodel=WorldModelConfig(**{"residual": False, **wm}),
            meta=meta,
            proprio_stats=ActionStats.from_dict(meta["proprio_stats"]) if meta.get("proprio_stats") else None,
        )
    except (KeyError, TypeError) as e:
        raise CheckpointError(f"{path}: meta.json lacks the world-model fields ({e})") from e
