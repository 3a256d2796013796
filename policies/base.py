"""The policy protocol: reset with the instruction and a seed, act on an observation, return a chunk of
actions in the env's units (7-d: translation ‖ axis-angle ‖ relative gripper) with terminate flags.

The harness executes the chunk step by step and calls `act` again when it is used up (receding horizon);
a new instruction (SIMPLER's two-stage tasks) calls `reset` again. A policy that keeps a history of frames
may define `observe(obs)`: the harness then shows it every observation exactly once, the one `act` gets
and, through `observe`, those of the chunk's later steps.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np

from worldflow.data.actions import ACTION_DIM


@dataclass
class ActionChunk:
    actions: np.ndarray  # (K, 7) float32, env units
    terminate: np.ndarray  # (K,) bool

    def __post_init__(self):
        self.actions = np.asarray(self.actions, np.float32).reshape(-1, ACTION_DIM)
        self.terminate = np.asarray(self.terminate, bool).reshape(-1)
        if len(self.terminate) != len(self.actions):
            raise ValueError(
                f"chunk has {len(self.actions)} actions but {len(self.terminate)} terminate flags"
            )


class Policy(Protocol):
    action_dim: int

    def reset(self, instruction: str, seed: int) -> None: ...

    def act(self, obs: dict) -> ActionChunk: ...
