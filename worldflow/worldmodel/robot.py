"""A robot = a dataset, an action spec and an evaluation env, chosen together by `robot=<name>`."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from worldflow.data.rlds import RobotDataConfig
from worldflow.errors import DataError


@dataclass
class EmbeddedConfig:
    """The default dataset when none is configured: RT-1-schema episodes from the CPU suite's experts."""

    root: str = "data/rt1_embedded"
    tasks: list[str] = field(default_factory=lambda: ["google_robot_all"])
    episodes_per_task: int = 12
    seed: int = 0
    # The application's step that writes it, `module:function(root, tasks, episodes_per_task, seed) -> root`:
    # the library names it here and never imports the application itself.
    writer: str = "eval.collect:ensure_embedded_dataset"


@dataclass
class RobotConfig:
    name: str = "rt1"
    data: RobotDataConfig = field(default_factory=RobotDataConfig)
    embedded: EmbeddedConfig | None = field(default_factory=EmbeddedConfig)
    # How the env's proprioception (xyz ‖ quaternion w-first ‖ closedness, the suite's and the SimplerEnv
    # worker's) becomes the dataset's proprio_keys when the policy runs: rt1 (`rt1_proprio` below)
    # | none (the env already sends the dataset's fields)
    proprio_from_env: str = "rt1"
    # What a left-right reflection (y -> -y) does to the dataset's actions and proprioception, for the
    # fine-tune's augment_mirror: RT-1's world_vector ‖ rotation_delta (an axis-angle vector: x and z flip)
    # ‖ gripper, and base_pose_tool_reached (xyz ‖ quaternion x, y, z, w: x and z flip) ‖ gripper_closed.
    mirror_action_signs: list[float] = field(default_factory=lambda: [1, -1, 1, -1, 1, -1, 1])
    mirror_proprio_signs: list[float] = field(default_factory=lambda: [1, -1, 1, -1, 1, -1, 1, 1])


def rt1_proprio(proprio: np.ndarray) -> np.ndarray:
    """The suite's proprioception (..., 8) = xyz ‖ quaternion (w, x, y, z) ‖ closedness in [0, 1] -> RT-1's
    observation features base_pose_tool_reached (7) = xyz ‖ quaternion (x, y, z, w), as fractal20220817_data
    stores it (open-pi-zero's SimplerEnv adapter reorders the same way), ‖ gripper_closed (1), a 0/1 flag.
    The one place this convention lives: the RLDS writer stores it, the world-model policy feeds it to a
    checkpoint trained on RT-1 fields."""
    p = np.asarray(proprio, np.float32)
    if p.shape[-1] != 8:
        raise DataError(
            f"proprioception must have 8 numbers (xyz, quaternion, closedness), got {p.shape[-1]}"
        )
    return np.concatenate(
        [p[..., :3], p[..., 4:7], p[..., 3:4], (p[..., 7:8] > 0.5).astype(np.float32)], axis=-1
    )


# robot.proprio_from_env -> the conversion the policy applies to the env's proprioception
PROPRIO_FROM_ENV = {"rt1": rt1_proprio, "none": lambda p: p}
