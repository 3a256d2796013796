"""Plug-in envs: any gymnasium env with an image observation and a 7-d action, made usable by the project's
collection and evaluation through registration plus a config file `configs/env/<name>.yaml`.

    id: MyLab/PushBlock-v0          # a gymnasium id (or a CPU-suite task name)
    entry_point: mylab.envs:PushBlock   # optional: registered under `id` if it is not registered yet
    image_key: rgb                  # observation key of the (H, W, 3) uint8 image; null: the observation is it
    proprio_key: null               # optional observation key passed on as "proprio"
    instruction: push the block to the line   # used when the env has no get_language_instruction()
    max_steps: 60                   # optional step limit (truncation)
    success_key: success            # info key read as info["success"]
    kwargs: {}                      # keyword arguments of the env's constructor

`SimplerAPI(env, ...)` gives the env SimplerEnv's extra methods (the env's own when it has them) and the
{"image", "proprio"} observation the loop expects. The loop reads the protocol through `env.unwrapped`, so the
adapter answers `unwrapped` with itself (as lerobot's env wrappers expose the task-level API at the top).
"""

from __future__ import annotations

import dataclasses
import importlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np

from worldflow.errors import ConfigError, EnvError


@dataclass
class EnvConfig:
    id: str
    entry_point: str | None = None
    image_key: str | None = "image"
    proprio_key: str | None = None
    instruction: str | None = None
    max_steps: int | None = None
    success_key: str = "success"
    kwargs: dict = field(default_factory=dict)
    tasks: list[str] | None = (
        None  # suites only: the task names or groups this config covers (the harness reads it)
    )


class SimplerAPI(gym.Wrapper):
    """SimplerEnv's protocol on any env: get_language_instruction(), is_final_subtask(),
    advance_to_next_subtask(), obs {"image", ["proprio"]}, info {"success", "elapsed_steps"}."""

    def __init__(
        self,
        env: gym.Env,
        instruction: str | None = None,
        image_key: str | None = "image",
        proprio_key: str | None = None,
        max_steps: int | None = None,
        success_key: str = "success",
    ):
        super().__init__(env)
        self._inner = env.unwrapped
        if instruction is None and not hasattr(self._inner, "get_language_instruction"):
            raise EnvError(
                f"env {env.spec.id if env.spec else type(self._inner).__name__} has no get_language_instruction(); "
                "give `instruction` in its config"
            )
        self.instruction, self.image_key, self.proprio_key = instruction, image_key, proprio_key
        self.success_key = success_key
        spec_steps = env.spec.max_episode_steps if env.spec is not None else None
        self.max_episode_steps = max_steps or getattr(self._inner, "max_episode_steps", None) or spec_steps
        self.elapsed_steps = 0
        image_space = env.observation_space[image_key] if image_key is not None else env.observation_space
        spaces = {"image": image_space}
        if proprio_key is not None:
            spaces["proprio"] = env.observation_space[proprio_key]
        self.observation_space = gym.spaces.Dict(spaces)

    @property
    def unwrapped(self) -> SimplerAPI:
        return self

    def get_language_instruction(self) -> str:
        if hasattr(self._inner, "get_language_instruction"):
            return self._inner.get_language_instruction()
        return self.instruction  # type: ignore[return-value]

    def is_final_subtask(self) -> bool:
        return bool(self._inner.is_final_subtask()) if hasattr(self._inner, "is_final_subtask") else True

    def advance_to_next_subtask(self) -> None:
        if hasattr(self._inner, "advance_to_next_subtask"):
            self._inner.advance_to_next_subtask()

    def _adapt(self, obs: Any) -> dict[str, np.ndarray]:
        try:
            image = np.asarray(obs if self.image_key is None else obs[self.image_key])
        except (KeyError, TypeError, IndexError) as e:
            raise EnvError(f"observation has no image under image_key={self.image_key!r}: {e!r}") from e
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[-1] != 3:
            raise EnvError(
                f"image under image_key={self.image_key!r} is {image.dtype} {image.shape}; expected (H, W, 3) uint8"
            )
        out = {"image": image}
        if self.proprio_key is not None:
            out["proprio"] = np.asarray(obs[self.proprio_key], np.float32)
        return out

    def reset(self, **kwargs):
        obs, info = self.env.reset(**kwargs)
        self.elapsed_steps = 0
        return self._adapt(obs), {
            **info,
            "success": bool(info.get(self.success_key, False)),
            "elapsed_steps": 0,
        }

    def step(self, action):
        action = np.asarray(action)
        if action.shape != (7,):
            raise EnvError(
                f"action has shape {action.shape}; expected (7,) (translation ‖ rotation ‖ gripper)"
            )
        obs, reward, terminated, truncated, info = self.env.step(action.astype(self.env.action_space.dtype))
        self.elapsed_steps += 1
        if self.max_episode_steps is not None and self.elapsed_steps >= self.max_episode_steps:
            truncated = True
        info = {
            **info,
            "success": bool(info.get(self.success_key, False)),
            "elapsed_steps": self.elapsed_steps,
        }
        return self._adapt(obs), reward, terminated, truncated, info


def load_env_config(cfg: dict | str | Path) -> EnvConfig:
    """A dict or a YAML file -> EnvConfig; a misspelt key fails with its name (ConfigError)."""
    source = "config"
    if not isinstance(cfg, dict):
        import yaml

        path, source = Path(cfg), str(cfg)
        try:
            cfg = yaml.safe_load(path.read_text())
        except OSError as e:
            raise ConfigError(f"cannot read env config {path}: {e}") from e
        if not isinstance(cfg, dict):
            raise ConfigError(f"env config {path} must be a mapping, got {type(cfg).__name__}")
    known = {f.name for f in dataclasses.fields(EnvConfig)}
    unknown = sorted(set(cfg) - known)
    if unknown:
        raise ConfigError(f"unknown key(s) {unknown} in env config {source}; known: {sorted(known)}")
    if "id" not in cfg:
        raise ConfigError(f"env config {source} needs an `id` (a gymnasium id or a CPU-suite task name)")
    return EnvConfig(**cfg)


def _register(cfg: EnvConfig) -> None:
    if cfg.entry_point is None or cfg.id in gym.registry:
        return
    module, _, attr = cfg.entry_point.partition(":")
    try:
        getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError) as e:
        raise ConfigError(f"entry_point {cfg.entry_point!r} of env {cfg.id!r} cannot be imported: {e}") from e
    gym.register(cfg.id, entry_point=cfg.entry_point)


def make_from_config(cfg: dict | str | Path, **overrides) -> SimplerAPI:
    """Make the env a config describes (registering it if it names an entry point), behind SimplerAPI.
    `overrides` update the config's `kwargs` (e.g. image_size)."""
    from envs.registry import make

    config = load_env_config(cfg)
    _register(config)
    env = make(config.id, **{**config.kwargs, **overrides})
    return SimplerAPI(
        env,
        instruction=config.instruction,
        image_key=config.image_key,
        proprio_key=config.proprio_key,
        max_steps=config.max_steps,
        success_key=config.success_key,
    )
