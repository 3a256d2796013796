"""`from_checkpoint(dir)`: a fine-tuned world model with its robot spec and action statistics, no Hydra."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import torch
from omegaconf import OmegaConf

from worldflow.ckpt import from_checkpoint as load_model
from worldflow.data.actions import ActionStats
from worldflow.errors import CheckpointError
from worldflow.model.dit import DiT
from worldflow.worldmodel.modes import WorldModelConfig
from worldflow.worldmodel.robot import RobotConfig


@dataclass
class WorldModel:
    model: DiT
    robot: RobotConfig  # what the model was trained for (dataset, crop, action conventions, env)
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
            robot=robot_config(meta["robot"]),
            stats=ActionStats.from_dict(meta["action_stats"]),
            # checkpoints written before worldmodel.residual existed predicted the frames themselves
            worldmodel=WorldModelConfig(**{"residual": False, **wm}),
            meta=meta,
            proprio_stats=ActionStats.from_dict(meta["proprio_stats"]) if meta.get("proprio_stats") else None,
        )
    except (KeyError, TypeError) as e:
        raise CheckpointError(f"{path}: meta.json lacks the world-model fields ({e})") from e


def known_fields(schema, d: dict) -> dict:
    """`d` without the keys `schema` (a dataclass, nested ones too) does not have: fields since removed."""
    fields = {f.name: f for f in dataclasses.fields(schema)}
    out = {}
    for k, v in d.items():
        if k not in fields:
            continue
        sub = fields[k].default_factory
        nested = sub is not dataclasses.MISSING and dataclasses.is_dataclass(sub)
        out[k] = known_fields(sub, v) if nested and isinstance(v, dict) else v
    return out


def robot_config(d: dict) -> RobotConfig:
    """A checkpoint's recorded robot (meta.json) as the typed RobotConfig it was written from; keys a newer
    RobotConfig lacks are dropped, keys an older checkpoint lacks take today's defaults."""
    return OmegaConf.to_object(
        OmegaConf.merge(OmegaConf.structured(RobotConfig), known_fields(RobotConfig, d))
    )
