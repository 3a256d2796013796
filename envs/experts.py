"""Scripted experts for every CPU-suite task, acting from privileged state (object poses, drawer joints, read
through `env.unwrapped`) with the same 7-d action a policy uses.

`make_expert(env).act(obs) -> (action (7,) float32, terminate: bool)`. `terminate` is the RT-1 terminate flag:
the expert raises it when its current (sub)task is done. Under SIMPLER's loop that ends the episode on the
final subtask, and on the drawer + apple task's first subtask ("open top drawer") it makes the loop call
`advance_to_next_subtask()`; the expert then plans the second subtask from the state it finds.

Each plan is a list of waypoints (TCP position, gripper yaw, gripper command) walked with steps clipped to the
action bounds (the move-to-pose style of Meta-World's scripted policies); a waypoint is done when reached (then `wait` more steps, e.g. for the fingers to close) or
after `budget` steps (e.g. pushing a drawer against its stop).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from envs import scene
from envs.geometry import quat_conj, quat_mul, quat_to_axis_angle, rotate, yaw_quat
from envs.google_robot import CloseDrawer, MoveNear, OpenDrawer, PickCokeCan, PlaceAppleInClosedTopDrawer
from envs.suite import ACTION_HIGH, CpuSuiteEnv
from worldflow.errors import EnvError

OPEN, CLOSE = -1.0, 1.0
GAP_X = scene.CABINET_FRONT_X - 0.025  # between a closed drawer's face and its handle bar (fingers go here)
CARRY_Z = 0.18  # above the table top while carrying (clears a standing can)


@dataclass
class Waypoint:
    pos: np.ndarray | Callable[[], np.ndarray]  # TCP target (base frame) or a function of the live state
    grip: float = OPEN
    yaw: float = 0.0
    tol: float = 0.006
    wait: int = 0
    budget: int = 25


def grasp_yaw(env: CpuSuiteEnv, name: str) -> float:
    """Gripper yaw that closes the fingers across the object's narrow side, wrapped to [-pi/2, pi/2)."""
    quat = env.body_quat(name)
    if name.endswith("can"):
        axis = rotate(quat, np.array([0.0, 0.0, 1.0]))
        if abs(axis[2]) > 0.7:
            return 0.0  # standing: any yaw
    elif name == "sponge":
        axis = rotate(quat, np.array([1.0, 0.0, 0.0]))
    else:
        return 0.0  # round
    yaw = float(np.arctan2(axis[1], axis[0]))  # the long axis becomes the hand's x: fingers close across it
    return (yaw + np.pi / 2) % np.pi - np.pi / 2


def grasp_height(env: CpuSuiteEnv, name: str) -> float:
    """TCP height for a top-down grasp: the upper part of a standing can, the middle of everything else."""
    centre = env.body_pos(name)[2]
    upright = name.endswith("can") and abs(rotate(env.body_quat(name), np.array([0.0, 0, 1]))[2]) > 0.7
    return centre + 0.016 if upright else max(centre, scene.TABLE_Z + 0.025)


class Expert:
    """Plans from privileged state when an episode (or subtask) starts, then walks the waypoints."""

    def __init__(self, env):
        inner = env
        while not isinstance(inner, CpuSuiteEnv) and hasattr(inner, "env"):
            inner = inner.env  # gymnasium wrappers, SimplerAPI (whose `unwrapped` is itself)
        if not isinstance(inner, CpuSuiteEnv):
            raise EnvError(f"scripted experts need a CPU-suite env, got {type(inner).__name__}")
        self.env: CpuSuiteEnv = inner
        self.reset()

    def reset(self) -> None:
        self.plan: list[Waypoint] = []
        self.index, self.steps_here, self.waited = 0, 0, 0
        self.planned_for: tuple[int, int] | None = None

    def act(self, obs: dict | None = None) -> tuple[np.ndarray, bool]:
        env = self.env
        key = (env.episode, env.subtask_index)  # a new episode or subtask: plan from the state found now
        if self.planned_for != key:
            self.plan, self.index, self.steps_here, self.waited = self.make_plan(), 0, 0, 0
            self.planned_for = key
        while self.index < len(self.plan) and self._done(self.plan[self.index]):
            self.index, self.steps_here, self.waited = self.index + 1, 0, 0
        if self.index >= len(self.plan):
            return np.zeros(7, np.float32), True
        self.steps_here += 1
        return self._toward(self.plan[self.index]), False

    def _target(self, wp: Waypoint) -> np.ndarray:
        return np.asarray(wp.pos() if callable(wp.pos) else wp.pos, np.float64)

    def _errors(self, wp: Waypoint) -> tuple[np.ndarray, np.ndarray]:
        pos_error = self._target(wp) - self.env.ee_pos
        rot_error = quat_to_axis_angle(quat_mul(yaw_quat(wp.yaw), quat_conj(self.env.ee_quat)))
        return pos_error, rot_error

    def _done(self, wp: Waypoint) -> bool:
        """Reached (then counts the `wait` steps, so it is called once per act) or out of budget."""
        pos_error, rot_error = self._errors(wp)
        grip_settled = self.env.gripper_command == (1.0 if wp.grip > 0 else 0.0)
        if self.steps_here >= wp.budget or (
            np.linalg.norm(pos_error) < wp.tol and np.linalg.norm(rot_error) < 0.03 and grip_settled
        ):
            if self.waited >= wp.wait or self.steps_here >= wp.budget:
                return True
            self.waited += 1
        return False

    def _toward(self, wp: Waypoint) -> np.ndarray:
        pos_error, rot_error = self._errors(wp)
        translation = np.clip(pos_error, -ACTION_HIGH[:3], ACTION_HIGH[:3])
        rotation = rot_error * min(1.0, ACTION_HIGH[3] / max(np.abs(rot_error).max(), 1e-9))  # keep the axis
        return np.concatenate([translation, rotation, [wp.grip]]).astype(np.float32)

    # ----- plans ---------------------------------------------------------------------------------------
    def make_plan(self) -> list[Waypoint]:
        task, env = self.env.task, self.env
        if isinstance(task, PickCokeCan):
            return self._pick("coke_can")
        if isinstance(task, MoveNear):
            return self._pick(task.source, lift=CARRY_Z) + self._place_near(task)
        if isinstance(task, OpenDrawer):
            return self._open_drawer(task.row)
        if isinstance(task, CloseDrawer):
            return self._close_drawer(task.row)
        if isinstance(task, PlaceAppleInClosedTopDrawer):
            return self._open_drawer("top") if env.subtask_index == 0 else self._apple_into_drawer()
        raise EnvError(f"no scripted expert for task {env.task_name!r}")

    def _pick(self, name: str, lift: float = 0.12, lift_to: float | None = None) -> list[Waypoint]:
        """Above, down, close, then up by `lift` (or to height `lift_to`), following the object's live xy
        (closed loop, so an object that creeps or is nudged is still grasped)."""
        z, yaw = grasp_height(self.env, name), grasp_yaw(self.env, name)
        top = z + lift if lift_to is None else lift_to

        def over(height: float) -> Callable[[], np.ndarray]:
            return lambda: np.array([*self.env.body_pos(name)[:2], height])

        return [
            Waypoint(over(z + 0.12), OPEN, yaw, tol=0.01),
            Waypoint(over(z), OPEN, yaw, tol=0.005),
            Waypoint(over(z), CLOSE, yaw, wait=1),
            Waypoint(over(top), CLOSE, yaw, tol=0.01),
        ]

    def _place_near(self, task) -> list[Waypoint]:
        env, src, tgt = self.env, task.source, task.target
        yaw = grasp_yaw(env, src)
        gap = scene.OBJECTS[src].half_diagonal + scene.OBJECTS[tgt].half_diagonal + 0.02
        tx, ty, _ = env.body_pos(tgt)
        grasp_z = grasp_height(env, src)  # the object sits on the table again once placed
        place = np.array([tx - gap, ty, grasp_z + 0.005])  # on the robot's side of the target
        return [
            Waypoint(place + [0, 0, CARRY_Z], CLOSE, yaw, tol=0.01),
            Waypoint(place, CLOSE, yaw, tol=0.006),
            Waypoint(place, OPEN, yaw, wait=1),
            Waypoint(place + [0, 0, 0.12], OPEN, yaw, tol=0.01),
        ]

    def _open_drawer(self, row: str) -> list[Waypoint]:
        bar_z, start_z = scene.DRAWER_ROWS[row], max(self.env.ee_pos[2], scene.CABINET_TOP_Z + 0.12)
        pulled_x = GAP_X - 0.22  # drawer pulled to 0.22 m of its 0.25 m travel
        return [
            Waypoint(np.array([GAP_X, 0.0, start_z]), OPEN, tol=0.01),  # over the gap, then straight down
            Waypoint(np.array([GAP_X, 0.0, bar_z - 0.005]), OPEN, tol=0.005),
            Waypoint(np.array([pulled_x, 0.0, bar_z - 0.005]), OPEN, tol=0.01, budget=12),
            Waypoint(np.array([pulled_x, 0.0, bar_z + 0.15]), OPEN, tol=0.01),
        ]

    def _close_drawer(self, row: str) -> list[Waypoint]:
        env, bar_z = self.env, scene.DRAWER_ROWS[row]
        bar_x = scene.CABINET_FRONT_X - env.drawer_qpos(row) - scene.HANDLE_OFFSET
        front = bar_x - 0.035  # closed fingers just in front of the bar
        pushed = scene.CABINET_FRONT_X - scene.HANDLE_OFFSET - 0.015
        return [
            Waypoint(np.array([front, 0.0, bar_z + 0.15]), CLOSE, tol=0.01),
            Waypoint(np.array([front, 0.0, bar_z]), CLOSE, tol=0.006),
            Waypoint(np.array([pushed, 0.0, bar_z]), CLOSE, tol=0.006, budget=10),
            Waypoint(np.array([pushed - 0.1, 0.0, bar_z + 0.05]), CLOSE, tol=0.01),
        ]

    def _apple_into_drawer(self) -> list[Waypoint]:
        env = self.env
        over_drawer = lambda: np.array([scene.CABINET_FRONT_X - env.drawer_qpos("top") / 2 + 0.01, 0.0, 1.0])
        drop_z = scene.DRAWER_ROWS["top"] - 0.045 + 0.032 + 0.02  # drawer floor + apple radius + 2 cm
        return self._pick("apple", lift_to=1.0) + [
            Waypoint(over_drawer, CLOSE, tol=0.01),
            Waypoint(lambda: over_drawer() - [0, 0, 1.0 - drop_z], CLOSE, tol=0.006),
            Waypoint(lambda: over_drawer() - [0, 0, 1.0 - drop_z], OPEN, wait=1),
            Waypoint(over_drawer, OPEN, tol=0.01),
        ]


def make_expert(env) -> Expert:
    """The scripted expert of `env`'s task; `env` is a CPU-suite env (wrapped or not)."""
    return Expert(env)
