"""Policies chosen by name (`policy.name=...`), as LeRobot's factories do."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from worldflow.data.actions import ACTION_DIM
from worldflow.errors import CheckpointError, ConfigError


@dataclass
class PlanSettings:
    samples: int = 1
    score: str = "consistency"


@dataclass
class PolicyConfig:
    name: str = "world_model"  # world_model | scripted | random | replay
    checkpoint: str | None = None  # world_model: a fine-tuned run or checkpoint folder
    steps: int = 10  # Euler steps for the action tokens
    stride: int = 4  # actions executed per chunk before replanning
    plan: PlanSettings = field(default_factory=PlanSettings)
    cache: str | None = None  # replay: an episode cache folder (default: the checkpoint's)
    device: str = "cpu"
    # which terminate flags reach the env: all | subtask | never (eval.loop.run_episode)
    terminate: str = "all"
    terminate_after: int = 1  # world_model: send a terminate only when this many chunks in a row predict it
    noise: str = "chunk"  # world_model: chunk (fresh initial noise per chunk) | episode (one per episode)


def policy_factory(cfg: PolicyConfig, robot: str, suite: str) -> Callable:
    """-> make(client) building one policy per env worker (model weights shared)."""
    if cfg.terminate_after < 1:
        raise ConfigError(f"policy.terminate_after={cfg.terminate_after} must be >= 1")
    if cfg.name == "scripted":
        if suite != "cpu":
            raise ConfigError(
                "policy=scripted needs privileged state: only the cpu suite has scripted experts"
            )
        from policies.baselines import ScriptedPolicy

        return ScriptedPolicy
    if cfg.name == "random":
        from policies.baselines import RandomPolicy

        return lambda client: RandomPolicy()
    if cfg.name in ("world_model", "replay"):
        from worldflow.worldmodel.bundle import from_checkpoint

        wm = None
        if cfg.checkpoint:
            wm = from_checkpoint(cfg.checkpoint, device=cfg.device)
            if wm.robot.name != robot:
                raise CheckpointError(
                    f"checkpoint {cfg.checkpoint} was trained for robot {wm.robot.name!r}, not robot={robot!r}"
                )
            # the robot's action (robot.data.action_dims; the terminate channel is not sent to the env)
            robot_dim = len(wm.stats.q01)
            if robot_dim != ACTION_DIM:
                raise CheckpointError(
                    f"checkpoint {cfg.checkpoint} predicts {robot_dim}-d actions; SIMPLER's Google-robot envs "
                    f"take {ACTION_DIM} (translation, rotation, gripper)"
                )
        if cfg.name == "replay":
            from policies.baselines import ReplayPolicy
            from worldflow.data.cache import EpisodeCache

            path = cfg.cache or (wm.meta["data"]["cache"] if wm else None)
            if not path:
                raise ConfigError("policy=replay needs policy.cache=<episode cache> or policy.checkpoint")
            cache = EpisodeCache(path)
            return lambda client: ReplayPolicy(cache)
        if wm is None:
            raise ConfigError("policy=world_model needs policy.checkpoint=<fine-tuned run or checkpoint>")
        from policies.world_model import PlanConfig, WorldModelPolicy

        settings = dict(
            steps=cfg.steps,
            stride=cfg.stride,
            plan=PlanConfig(cfg.plan.samples, cfg.plan.score),
            device=cfg.device,
            terminate_after=cfg.terminate_after,
            noise=cfg.noise,
        )
        WorldModelPolicy(wm, **settings)  # a bad setting fails here, once, not in every env worker
        return lambda client: WorldModelPolicy(wm, **settings)
    raise ConfigError(f"unknown policy {cfg.name!r}; choose world_model, scripted, random or replay")
