"""python -m worldflow.finetune robot=rt1 [debug=cpu] [init_from=<pretrain run>] [objective=selfflow|vanilla]

Fine-tunes the backbone as a world model on RLDS episodes (RT-1 by default); every token carries its own
timestep, so one network learns the policy, forward, inverse and joint modes (DESIGN.md §2).
"""

from __future__ import annotations

import dataclasses
import importlib
import sys
from dataclasses import dataclass, field
from typing import Any

import hydra
import numpy as np
from hydra.core.config_store import ConfigStore
from omegaconf import DictConfig, OmegaConf

import worldflow
from worldflow.config import CONFIG_DIR, LoggerConfig, entry_point, launch, run_meta, typed
from worldflow.data.rlds import open_cache
from worldflow.data.windows import WindowDataset, keyframe_repeats, split_episodes
from worldflow.model.dit import DiT, ModelConfig
from worldflow.objectives import build_objective, objective_config
from worldflow.train import TrainConfig
from worldflow.worldmodel.modes import WorldModelConfig, WorldModelObjective
from worldflow.worldmodel.openloop import OpenLoopConfig, evaluate_open_loop
from worldflow.worldmodel.robot import RobotConfig


@dataclass
class FinetuneConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    objective: Any = None
    train: TrainConfig = field(default_factory=TrainConfig)
    logger: LoggerConfig = field(default_factory=LoggerConfig)
    robot: RobotConfig = field(default_factory=RobotConfig)
    worldmodel: WorldModelConfig = field(default_factory=WorldModelConfig)
    openloop: OpenLoopConfig = field(default_factory=OpenLoopConfig)
    image_size: int = 64
    cache_dir: str = "data/cache"
    val_episodes: int = 4
    run_dir: str = "runs/finetune_rt1"
    resume: bool = False
    init_from: str | None = None
    expected_missing: list[str] = field(default_factory=list)
    init_drop: list[str] = field(default_factory=list)
    # train on every window and its left-right mirror image too (worldflow/data/windows.py): for scenes
    # symmetric about the camera's vertical plane, with a crop symmetric about the image centre
    augment_mirror: bool = False
    # draw windows whose actions the arm's state alone predicts badly up to 1 + keyframe_repeat times as
    # often (worldflow.data.windows.keyframe_repeats; 0 = every window once)
    keyframe_repeat: int = 0


def load_entry_point(spec: str, key: str):
    """`package.module:function` -> the function; a ConfigError naming `key` if it cannot be loaded."""
    module, _, name = spec.partition(":")
    try:
        return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError, ValueError) as e:
        raise worldflow.errors.ConfigError(
            f"{key}={spec!r} cannot be loaded ({e}); use package.module:function"
        ) from e


def resolve_dataset(cfg: FinetuneConfig) -> None:
    """No dataset configured: write (once) and use the embedded RT-1-schema dataset from the CPU suite."""
    if cfg.robot.data.root is not None:
        return
    if cfg.robot.embedded is None:
        raise worldflow.errors.ConfigError("robot.data.root is not set and the robot has no embedded default")
    emb = cfg.robot.embedded
    root = load_entry_point(emb.writer, "robot.embedded.writer")(
        emb.root, emb.tasks, emb.episodes_per_task, emb.seed
    )
    print(
        f"robot={cfg.robot.name}: no dataset configured (robot.data.root); using the embedded RT-1-schema dataset {root} written from the CPU suite's scripted experts"
    )
    cfg.robot.data.root = str(root)


def run(cfg: FinetuneConfig, raw: dict) -> dict:
    cfg.worldmodel.validate()  # a bad worldmodel.* key is named before any dataset or cache is written
    resolve_dataset(cfg)
    cache = open_cache(cfg.robot.data, cfg.image_size, cfg.cache_dir)
    train_eps, val_eps = split_episodes(len(cache), cfg.val_episodes)
    wm = cfg.worldmodel
    flags = {"proprio": wm.proprio, "terminate": wm.terminate, "frame_gap": wm.frame_gap}
    mirror = (cfg.robot.mirror_action_signs, cfg.robot.mirror_proprio_signs) if cfg.augment_mirror else None
    repeats = None
    if cfg.keyframe_repeat:
        repeats, residual = keyframe_repeats(cache, train_eps, wm.action_horizon, cfg.keyframe_repeat)
        print(
            f"keyframe_repeat={cfg.keyframe_repeat}: {int((repeats > 1).sum())} of {len(repeats)} windows "
            f"repeated, {repeats.sum()} in all (median residual {np.median(residual):.3f})"
        )
    dataset = WindowDataset(
        cache, wm.context, wm.horizon, wm.action_horizon, train_eps, **flags, mirror=mirror, repeats=repeats
    )
    proprio_dim = cache.proprio.shape[1]
    model_cfg = wm.model_config(
        cfg.model, cfg.image_size, cache.embeddings.shape[1], proprio_dim, cache.actions.shape[1]
    )
    model = DiT(model_cfg)
    objective = WorldModelObjective(wm, build_objective(cfg.objective, model), proprio_dim)
    n_params = sum(p.numel() for p in model.parameters())
    print(
        f"finetune: robot={cfg.robot.name} {len(cache)} episodes ({len(train_eps)} train, {len(val_eps)} held out), "
        f"{len(dataset)} windows, model={model_cfg.size} ({n_params / 1e6:.1f}M params, {model.num_tokens} tokens), "
        f"objective={cfg.objective['name']}, run_dir={cfg.run_dir}"
    )
    meta = run_meta(
        "worldmodel", model_cfg, cfg.objective, raw,
        worldmodel=dataclasses.asdict(wm),
        robot=dataclasses.asdict(cfg.robot),
        action_stats=cache.stats.to_dict(),
        proprio_stats=cache.proprio_stats.to_dict() if wm.proprio else None,
        data={"cache": str(cache.path), "hash": cache.meta.get("hash"), "val_episodes": val_eps},
    )  # fmt: skip
    val = WindowDataset(cache, wm.context, wm.horizon, wm.action_horizon, val_eps, **flags)

    def sample_fn(ema, step, run_dir):
        evaluate_open_loop(ema, val, cfg.openloop, run_dir / "openloop" / f"step_{step:07d}")

    return launch(cfg, raw, model, objective, dataset, meta, sample_fn, init_drop=cfg.init_drop)


# the YAML files set only what differs from the dataclass, which Hydra sees as the schema
ConfigStore.instance().store(name="finetune_schema", node=FinetuneConfig)


@hydra.main(config_path=CONFIG_DIR, config_name="finetune", version_base="1.3")
@entry_point
def main(raw: DictConfig) -> None:
    cfg = typed(FinetuneConfig, raw, ignore=("objective",))
    objective_config(cfg.objective)
    last = run(cfg, OmegaConf.to_container(raw, resolve=True))
    print(f"done: step {last.get('step')} loss {last.get('loss', float('nan')):.4f} -> {cfg.run_dir}")


if __name__ == "__main__":
    sys.exit(main())
