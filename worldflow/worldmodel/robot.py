"""A robot = a dataset, an action spec and an evaluation env, chosen together by `robot=<name>`."""

from __future__ import annotations

from dataclasses import dataclass, field

from worldflow.data.rlds import RobotDataConfig


@dataclass
class EmbeddedConfig:
    """The default dataset when none is configured: RT-1-schema episodes from the CPU suite's experts."""

    root: str = "data/rt1_embedded"
    tasks: list[str] = field(default_factory=lambda: ["google_robot_all"])
    episodes_per_task: int = 12
    seed: int = 0


@dataclass
class RobotConfig:
    name: str = "rt1"
    data: RobotDataConfig = field(default_factory=RobotDataConfig)
    embedded: EmbeddedConfig | None = field(default_factory=EmbeddedConfig)
    # What the evaluation env expects: the model predicts standardised actions (absolute gripper).
    env_suite: str = "cpu"  # cpu | simpler
    env_tasks: list[str] = field(default_factory=lambda: ["google_robot_all"])
    rotation: str = "axis_angle"  # axis_angle (RT-1: passed through) | rpy (Octo/OpenVLA: converted)
    gripper_out: str = "relative"  # what the env takes: relative (+1 close, -1 open)
    # How the env's proprioception (xyz ‖ quaternion w-first ‖ closedness, the suite's and the SimplerEnv
    # worker's) becomes the dataset's proprio_keys when the policy runs: rt1 (envs.rlds_writer.rt1_proprio)
    # | none (the env already sends the dataset's fields)
    proprio_from_env: str = "rt1"
    # What a left-right reflection (y -> -y) does to the dataset's actions and proprioception, for the
    # fine-tune's augment_mirror: RT-1's world_vector ‖ rotation_delta (an axis-angle vector: x and z flip)
    # ‖ gripper, and base_pose_tool_reached (xyz ‖ quaternion x, y, z, w: x and z flip) ‖ gripper_closed.
    mirror_action_signs: list[float] = field(default_factory=lambda: [1, -1, 1, -1, 1, -1, 1])
    mirror_proprio_signs: list[float] = field(default_factory=lambda: [1, -1, 1, -1, 1, -1, 1, 1])
