"""Baselines: random actions, replay of a dataset episode's actions, and the scripted expert (which needs
the env's privileged state, so it runs inside the env worker, eval/worker.py, and is asked over the client)."""

from __future__ import annotations

import numpy as np

from policies.base import ActionChunk
from policies.conversions import absolute_to_relative_rt1
from worldflow.data.actions import ACTION_DIM

# Documented action bounds of the CPU suite (envs/): translation ±0.05 m, rotation ±0.25 rad per step.
DEFAULT_LOW = np.array([-0.05, -0.05, -0.05, -0.25, -0.25, -0.25, -1.0], np.float32)
DEFAULT_HIGH = -DEFAULT_LOW


class FunctionPolicy:
    """A policy from a function `fn(obs, instruction) -> action (7,)` or `(action, terminate)`, one step a
    chunk: for looking at envs and writing tests."""

    action_dim = ACTION_DIM

    def __init__(self, fn):
        self.fn, self.instruction = fn, ""

    def reset(self, instruction: str, seed: int) -> None:
        self.instruction = instruction

    def act(self, obs: dict) -> ActionChunk:
        out = self.fn(obs, self.instruction)
        action, terminate = out if isinstance(out, tuple) else (out, False)
        return ActionChunk(np.asarray(action, np.float32)[None], np.array([bool(terminate)]))


class RandomPolicy:
    """Uniform actions inside the bounds, with the gripper command drawn from {-1, 0, +1}."""

    action_dim = ACTION_DIM

    def __init__(self, low=DEFAULT_LOW, high=DEFAULT_HIGH, chunk: int = 1):
        self.low, self.high, self.chunk = np.asarray(low, np.float32), np.asarray(high, np.float32), chunk
        self.rng = np.random.default_rng(0)

    def reset(self, instruction: str, seed: int) -> None:
        self.rng = np.random.default_rng(seed)

    def act(self, obs: dict) -> ActionChunk:
        a = self.rng.uniform(self.low, self.high, size=(self.chunk, ACTION_DIM)).astype(np.float32)
        a[:, 6] = self.rng.choice([-1.0, 0.0, 1.0], size=self.chunk)
        return ActionChunk(a, np.zeros(self.chunk, bool))


class ReplayPolicy:
    """Replays the actions of a dataset episode whose instruction matches (open loop): how far the data's
    own actions get without feedback. Actions come from an episode cache (absolute gripper)."""

    action_dim = ACTION_DIM

    def __init__(self, cache):
        self.cache = cache
        self.queue: np.ndarray | None = None

    def reset(self, instruction: str, seed: int) -> None:
        matches = [e for e, text in enumerate(self.cache.meta["instructions"]) if text == instruction]
        if not matches:
            self.queue = np.zeros((0, ACTION_DIM), np.float32)
            return
        ep = self.cache.episode(matches[seed % len(matches)])
        acts = ep["actions"].copy()
        acts[:, 6] = absolute_to_relative_rt1(acts[:, 6], previous_open=1.0)
        self.queue = acts
        self.pos = 0

    def act(self, obs: dict) -> ActionChunk:
        if self.queue is None or len(self.queue) == 0 or self.pos >= len(self.queue):
            return ActionChunk(np.zeros((1, ACTION_DIM), np.float32), np.array([True]))
        a = self.queue[self.pos : self.pos + 1]
        self.pos += 1
        return ActionChunk(a, np.array([self.pos >= len(self.queue)]))


class ScriptedPolicy:
    """The CPU suite's scripted expert, run inside the env worker from privileged state (an upper bound)."""

    action_dim = ACTION_DIM

    def __init__(self, client):
        self.client = client

    def reset(self, instruction: str, seed: int) -> None:
        pass

    def act(self, obs: dict) -> ActionChunk:
        action, terminate = self.client.expert()
        return ActionChunk(action[None], np.array([terminate]))
