"""SIMPLER's Google-robot tasks (simpler-env/SimplerEnv, DESIGN.md §4): names, instructions, step limits,
seeded initial states and success logic, on the scenes of `envs.scene`.

Success follows SIMPLER's `evaluate()` of each ManiSkill2 real2sim env, with thresholds in metres on our scene:
  pick coke can   grasped (both fingers touch it), lifted > 1 cm above its settled height and touching nothing
                  but the gripper; or, at any earlier time, lifted > 2 cm while grasped for >= 5 steps in a row
                  (SIMPLER's `success_from_episode_stats`)
  move near       source moved > 3 cm (xy) and more than any other object, within the sum of the two objects'
                  xy half-diagonals + 10 cm of the target, the target its nearest object (+1 cm), and every
                  object within 2 cm of its settled height (nothing fell or tipped over)
  open drawer     drawer joint >= 0.15 m (travel 0.25 m)
  close drawer    starts at 0.2 m; success <= 0.05 m
  apple           on the second subtask ("place apple into top drawer"): top drawer >= 0.05 m and the apple
                  touching the drawer; the env forces the second subtask at step 100
"""

from __future__ import annotations

import numpy as np

from envs import scene
from envs.geometry import axis_angle_to_quat, quat_mul, yaw_quat
from worldflow.errors import EnvError

FORCE_ADVANCE_AT = 100  # SIMPLER: the drawer + apple env switches to "place apple into top drawer" here
_GRIPPER = {"hand", "finger_left", "finger_right"}


class Task:
    """One episode's task logic; the env calls reset -> (settle) -> after_settle, then evaluate every step."""

    layout = "table"
    objects: list[str] = []
    max_steps = 80
    instructions: tuple[str, ...] = ()
    gripper_start = np.array([0.40, -0.18, 1.0])  # to the right of the view, as the Google robot's arm
    force_advance_at = FORCE_ADVANCE_AT

    @property
    def num_subtasks(self) -> int:
        return max(1, len(self.instructions))

    def instruction(self, subtask: int) -> str:
        return self.instructions[subtask]

    def reset(self, env, rng: np.random.Generator) -> None:
        raise NotImplementedError

    def after_settle(self, env) -> None:
        self.start = {name: env.body_pos(name) for name in self.objects}

    def evaluate(self, env) -> bool:
        raise NotImplementedError

    def distractor_position(self, i: int, rng: np.random.Generator) -> np.ndarray:
        """Visual distractors stand at the back of the table, away from the task's objects."""
        return np.array(
            [rng.uniform(0.84, 0.95), -0.3 + 0.3 * i + rng.uniform(-0.05, 0.05), scene.TABLE_Z + 0.03]
        )


CAN_ORIENTATIONS = ("horizontal", "vertical", "standing")


def can_quat(orientation: str, yaw: float) -> np.ndarray:
    """standing: axis up; horizontal: lying along base y (across the view); vertical: lying along base x."""
    lying = {
        "standing": np.zeros(3),
        "horizontal": np.array([np.pi / 2, 0, 0]),
        "vertical": np.array([0, np.pi / 2, 0]),
    }
    return quat_mul(yaw_quat(yaw), axis_angle_to_quat(lying[orientation]))


class PickCokeCan(Task):
    objects = ["coke_can"]
    instructions = ("pick coke can",)

    def __init__(self, orientation: str | None):
        self.fixed_orientation = orientation

    def reset(self, env, rng):
        self.orientation = self.fixed_orientation or str(rng.choice(CAN_ORIENTATIONS))
        yaw = rng.uniform(-0.3, 0.3)
        rest = scene.OBJECTS["coke_can"].half_height if self.orientation == "standing" else 0.033
        pos = np.array([rng.uniform(0.50, 0.62), rng.uniform(-0.15, 0.15), scene.TABLE_Z + rest])
        env.place_free_body("coke_can", pos, can_quat(self.orientation, yaw))
        self.consecutive_grasp, self.lifted_significantly = 0, False

    def evaluate(self, env) -> bool:
        touching = env.contact_bodies("coke_can")
        grasped = {"finger_left", "finger_right"} <= touching
        self.consecutive_grasp = self.consecutive_grasp + 1 if grasped else 0
        lift = env.body_pos("coke_can")[2] - self.start["coke_can"][2]
        if grasped and lift > 0.02 and self.consecutive_grasp >= 5:
            self.lifted_significantly = True
        return bool((grasped and lift > 0.01 and touching <= _GRIPPER) or self.lifted_significantly)


MOVE_NEAR_POOL = ["coke_can", "green_can", "orange", "sponge"]


class MoveNear(Task):
    objects = MOVE_NEAR_POOL
    source, target = "coke_can", "green_can"  # drawn on reset

    def instruction(self, subtask: int) -> str:
        return f"move {scene.OBJECTS[self.source].label} near {scene.OBJECTS[self.target].label}"

    def reset(self, env, rng):
        chosen = [str(n) for n in rng.permutation(MOVE_NEAR_POOL)[:3]]
        ys = np.array([-0.16, 0.0, 0.16]) + rng.uniform(-0.02, 0.02, 3)
        for name, y in zip(chosen, ys):
            pos = np.array(
                [0.58 + rng.uniform(-0.04, 0.04), y, scene.TABLE_Z + scene.OBJECTS[name].half_height]
            )
            env.place_free_body(name, pos, yaw_quat(rng.uniform(-0.3, 0.3)))
        src, tgt = rng.choice(3, size=2, replace=False)
        self.source, self.target = chosen[src], chosen[tgt]
        self.other = next(n for n in chosen if n not in (self.source, self.target))
        self.in_play = chosen

    def evaluate(self, env) -> bool:
        # SIMPLER's MoveNearInSceneEnv.evaluate: moved_correct_obj, near_tgt_obj, is_closest_to_tgt,
        # all_obj_keep_height
        pos = {n: env.body_pos(n) for n in self.in_play}
        moved = {n: np.linalg.norm(pos[n][:2] - self.start[n][:2]) for n in self.in_play}
        others = [n for n in self.in_play if n != self.source]
        moved_correct = moved[self.source] > 0.03 and all(moved[n] < moved[self.source] for n in others)
        to_target = np.linalg.norm(pos[self.source][:2] - pos[self.target][:2])
        near = to_target < (
            scene.OBJECTS[self.source].half_diagonal + scene.OBJECTS[self.target].half_diagonal + 0.10
        )
        closest = all(to_target < np.linalg.norm(pos[self.source][:2] - pos[n][:2]) + 0.01 for n in others)
        keep_height = all(abs(pos[n][2] - self.start[n][2]) < 0.02 for n in self.in_play)  # nothing fell
        return bool(moved_correct and near and closest and keep_height)


DRAWER_ROWS = tuple(scene.DRAWER_ROWS)


class CabinetTask(Task):
    layout = "cabinet"
    max_steps = 113
    gripper_start = np.array([0.40, -0.15, 1.0])

    def __init__(self, row: str | None):
        self.fixed_row = row
        self.row = row or "top"  # a drawn row is set on reset

    def distractor_position(self, i, rng):
        return np.array([rng.uniform(0.88, 0.94), -0.15 + 0.15 * i, scene.CABINET_TOP_Z + 0.03])


class OpenDrawer(CabinetTask):
    def instruction(self, subtask: int) -> str:
        return f"open {self.row} drawer"

    def reset(self, env, rng):
        self.row = self.fixed_row or str(rng.choice(DRAWER_ROWS))

    def evaluate(self, env) -> bool:
        return env.drawer_qpos(self.row) >= 0.15


class CloseDrawer(CabinetTask):
    def instruction(self, subtask: int) -> str:
        return f"close {self.row} drawer"

    def reset(self, env, rng):
        self.row = self.fixed_row or str(rng.choice(DRAWER_ROWS))
        env.set_drawer(self.row, 0.2)

    def evaluate(self, env) -> bool:
        return env.drawer_qpos(self.row) <= 0.05


class PlaceAppleInClosedTopDrawer(CabinetTask):
    objects = ["apple"]
    max_steps = 200
    instructions = ("open top drawer", "place apple into top drawer")

    def __init__(self):
        self.row = "top"

    def reset(self, env, rng):
        pos = np.array([rng.uniform(0.72, 0.80), rng.uniform(-0.12, 0.12), scene.CABINET_TOP_Z + 0.032])
        env.place_free_body("apple", pos)

    def evaluate(self, env) -> bool:
        if env.subtask_index != 1:
            return False
        return env.drawer_qpos("top") >= 0.05 and "drawer_top" in env.contact_bodies("apple")

    def distractor_position(self, i, rng):  # keep the cabinet top free for the apple
        return np.array([0.45 + 0.05 * i, 0.42, 0.02 + 0.03])


TASK_FACTORIES = {
    "google_robot_pick_coke_can": lambda: PickCokeCan(None),
    "google_robot_pick_horizontal_coke_can": lambda: PickCokeCan("horizontal"),
    "google_robot_pick_vertical_coke_can": lambda: PickCokeCan("vertical"),
    "google_robot_pick_standing_coke_can": lambda: PickCokeCan("standing"),
    "google_robot_move_near": MoveNear,
    "google_robot_open_drawer": lambda: OpenDrawer(None),
    **{f"google_robot_open_{row}_drawer": (lambda r=row: OpenDrawer(r)) for row in DRAWER_ROWS},
    "google_robot_close_drawer": lambda: CloseDrawer(None),
    **{f"google_robot_close_{row}_drawer": (lambda r=row: CloseDrawer(r)) for row in DRAWER_ROWS},
    "google_robot_place_apple_in_closed_top_drawer": PlaceAppleInClosedTopDrawer,
}


def make_task(name: str) -> Task:
    if name not in TASK_FACTORIES:
        import difflib

        close = difflib.get_close_matches(name, list(TASK_FACTORIES), n=3)
        raise EnvError(
            f"unknown task {name!r}"
            + (f"; did you mean {close}?" if close else f"; known: {list(TASK_FACTORIES)}")
        )
    return TASK_FACTORIES[name]()
