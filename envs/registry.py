"""Gymnasium registration of the CPU suite and `make` by SIMPLER task name or gymnasium id.

Every task is registered as `worldflow/<CamelCaseName>-v0` (e.g. google_robot_pick_coke_can ->
worldflow/GoogleRobotPickCokeCan-v0) with a string entry point, so registering imports neither MuJoCo nor
the scenes; they load on the first `make`. Bump the version when a task's dynamics or success logic changes.
A researcher's own env registers the same way (see `envs.plugin` and configs/env/).
"""

from __future__ import annotations

import difflib

import gymnasium as gym

from worldflow.errors import EnvError

# SIMPLER's Google-robot task names and step limits (DESIGN.md §4); kept here, free of MuJoCo, so that
# `import envs` stays cheap. envs.google_robot.TASK_FACTORIES holds the same names (a test checks).
MAX_STEPS = {
    "google_robot_pick_coke_can": 80,  # orientation drawn per episode
    "google_robot_pick_horizontal_coke_can": 80,
    "google_robot_pick_vertical_coke_can": 80,
    "google_robot_pick_standing_coke_can": 80,
    "google_robot_move_near": 80,
    "google_robot_open_top_drawer": 113,
    "google_robot_open_middle_drawer": 113,
    "google_robot_open_bottom_drawer": 113,
    "google_robot_close_top_drawer": 113,
    "google_robot_close_middle_drawer": 113,
    "google_robot_close_bottom_drawer": 113,
    "google_robot_place_apple_in_closed_top_drawer": 200,
    "google_robot_open_drawer": 113,  # drawer drawn per episode (SIMPLER has these too)
    "google_robot_close_drawer": 113,
}
TASKS: list[str] = list(MAX_STEPS)
_DRAWERS = [
    f"google_robot_{verb}_{row}_drawer" for verb in ("open", "close") for row in ("top", "middle", "bottom")
]
TASK_GROUPS: dict[str, list[str]] = {
    "google_robot_coke_can": TASKS[:4],
    "google_robot_drawer": _DRAWERS,
    "google_robot_drawer_apple": ["google_robot_place_apple_in_closed_top_drawer"],
    # SIMPLER's evaluated set; the random-drawer names only repeat the per-drawer tasks, so they stay out
    "google_robot_all": TASKS[:12],
}
TASK_GROUPS["google_robot_vm"] = TASK_GROUPS["google_robot_all"]  # name used by eval/simpler_rollout.py


def gym_id(task: str) -> str:
    """google_robot_open_top_drawer -> worldflow/GoogleRobotOpenTopDrawer-v0"""
    return "worldflow/" + "".join(part.capitalize() for part in task.split("_")) + "-v0"


TASK_OF_ID = {gym_id(task): task for task in TASKS}


def register_all() -> None:
    """Register every task (idempotent)."""
    for task, steps in MAX_STEPS.items():
        if gym_id(task) not in gym.registry:
            gym.register(
                gym_id(task),
                entry_point="envs.suite:CpuSuiteEnv",
                kwargs={"task": task},
                max_episode_steps=steps,
            )


def resolve(task: str) -> str:
    """A SIMPLER task name or a registered gymnasium id -> the gymnasium id; EnvError with close matches."""
    if task in MAX_STEPS:
        return gym_id(task)
    if task in gym.registry:
        return task
    known = TASKS + list(gym.registry)
    close = difflib.get_close_matches(task, known, n=3, cutoff=0.5)
    hint = f"; did you mean {close}?" if close else f"; known CPU-suite tasks: {TASKS}"
    raise EnvError(f"unknown task or env id {task!r}{hint}")


def make(task: str, /, **kwargs) -> gym.Env:
    """`gymnasium.make` by SIMPLER task name ("google_robot_open_top_drawer") or gymnasium id.

    CPU-suite keyword arguments: image_size (int or (H, W), default 128), visual_variation (False),
    pretty (False: fast rendering; True: shadows and multisampling for videos), render_mode ("rgb_array").
    """
    return gym.make(resolve(task), **kwargs)
