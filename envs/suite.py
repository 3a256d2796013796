"""The CPU suite's gymnasium env: SIMPLER's Google-robot protocol (DESIGN.md §4) on our MuJoCo scenes.

Control, as SIMPLER's Google robot ("arm_pd_ee_delta_pose_align" + relative gripper), at 3 Hz:
  action (7,) float32 = translation delta (m, base frame) ‖ axis-angle rotation delta (rad, base frame) ‖
  relative gripper in [-1, 1] (+1 close, -1 open).
  Bounds (values outside are clipped, see ACTION_LOW/HIGH): translation ±0.05 m and rotation ±0.25 rad per
  axis per step. The new end-effector target is  p' = p + Δp,  R' = R(Δrot) · R  with (p, R) the *measured*
  TCP pose (so a blocked gripper does not wind up), clipped to the layout's workspace box. The gripper keeps a
  commanded closedness g ← clip(g + a_grip, 0, 1); each finger's position target is g · FINGER_TRAVEL.
  One action = SUBSTEPS physics steps of PHYSICS_DT (166 × 2 ms ≈ 1/3 s; SIMPLER: 171 at 513 Hz). The mocap
  target moves linearly (position) and along the geodesic (rotation) over the first 3/4 of them, then holds
  so the hand settles on the target.
Observation: {"image": (H, W, 3) uint8 head camera, "proprio": (8,) float32 = TCP xyz (base frame) ‖ TCP
  quaternion (w, x, y, z), w >= 0 ‖ measured gripper closedness in [0, 1]}. The identity quaternion is the
  gripper pointing down with its fingers closing along y.
Episodes: `truncated` at the task's step limit, `terminated` always False (SIMPLER's loop decides when to
  stop); info = {"success": bool, "elapsed_steps": int} every step.
"""

from __future__ import annotations

import os

import gymnasium as gym
import numpy as np

from envs import scene
from envs._gl import before_first_renderer, choose_gl_backend
from envs.geometry import axis_angle_to_quat, canonical_quat, look_at_xyaxes, quat_mul
from envs.google_robot import Task, make_task
from worldflow.errors import EnvError

choose_gl_backend()  # MuJoCo reads MUJOCO_GL when it is first imported

import mujoco  # noqa: E402

ACTION_LOW = np.array([-0.05, -0.05, -0.05, -0.25, -0.25, -0.25, -1.0], np.float32)
ACTION_HIGH = -ACTION_LOW
# proprio bounds: TCP xyz (m; targets are clipped to the workspace), quaternion, closedness in [0, 1]
PROPRIO_LOW = np.array([-2.0, -2.0, -2.0, -1.0, -1.0, -1.0, -1.0, 0.0], np.float32)
PROPRIO_HIGH = np.array([2.0, 2.0, 2.0, 1.0, 1.0, 1.0, 1.0, 1.0], np.float32)
CONTROL_HZ = 3
SUBSTEPS = 166
_MOVE_CHUNKS, _CHUNK = 12, 10  # mocap target updated every 10 substeps over the first 120, then held
WORKSPACE = {  # TCP target box (m, base frame) per layout: keeps fingertips above the furniture's top
    "table": (np.array([0.25, -0.45, scene.TABLE_Z + 0.02]), np.array([1.0, 0.45, 1.3])),
    "cabinet": (np.array([0.25, -0.45, 0.42]), np.array([1.0, 0.45, 1.3])),
}


def parse_image_size(image_size: int | tuple[int, int] | list[int]) -> tuple[int, int]:
    """128 -> (128, 128); (256, 320) -> (256, 320) as (H, W)."""
    size = (image_size, image_size) if isinstance(image_size, int) else tuple(int(v) for v in image_size)
    if len(size) != 2 or min(size) < 8:
        raise EnvError(f"image_size={image_size!r}; expected an int or (H, W) with sides >= 8")
    return size  # type: ignore[return-value]


class CpuSuiteEnv(gym.Env):
    """One SIMPLER Google-robot task (`task`, e.g. "google_robot_open_top_drawer") in MuJoCo."""

    metadata = {"render_modes": ["rgb_array"], "render_fps": CONTROL_HZ}

    def __init__(
        self,
        task: str,
        image_size: int | tuple[int, int] = 128,
        visual_variation: bool = False,
        pretty: bool = False,
        render_mode: str | None = None,
    ):
        if render_mode not in (None, "rgb_array"):
            raise EnvError(f"render_mode={render_mode!r}; the CPU suite renders 'rgb_array' only")
        self.task_name = task
        self.task: Task = make_task(task)
        self.height, self.width = parse_image_size(image_size)
        self.visual_variation, self.pretty, self.render_mode = visual_variation, pretty, render_mode
        xml = scene.scene_xml(
            self.task.layout, self.task.objects, (self.height, self.width), pretty, visual_variation
        )
        self.model = mujoco.MjModel.from_xml_string(xml)
        self.data = mujoco.MjData(self.model)
        self.max_episode_steps = self.task.max_steps
        self.observation_space = gym.spaces.Dict(
            {
                "image": gym.spaces.Box(0, 255, (self.height, self.width, 3), np.uint8),
                "proprio": gym.spaces.Box(PROPRIO_LOW, PROPRIO_HIGH, dtype=np.float32),
            }
        )
        self.action_space = gym.spaces.Box(ACTION_LOW, ACTION_HIGH, dtype=np.float32)
        self._hand_qpos = self.model.joint("hand").qposadr[0]
        self._hand_dof = self.model.joint("hand").dofadr[0]
        self._defaults = {
            "geom_rgba": self.model.geom_rgba.copy(),
            "light_diffuse": self.model.light_diffuse.copy(),
            "light_dir": self.model.light_dir.copy(),
        }
        self._renderer: mujoco.Renderer | None = None
        self.subtask_index, self.elapsed_steps, self.gripper_command = 0, 0, 0.0
        self.episode = 0  # counts resets: experts re-plan when it changes
        self._needs_reset = True

    # ----- SimplerEnv's extra methods ----------------------------------------------------------------
    def get_language_instruction(self) -> str:
        return self.task.instruction(self.subtask_index)

    def is_final_subtask(self) -> bool:
        return self.subtask_index == self.task.num_subtasks - 1

    def advance_to_next_subtask(self) -> None:
        self.subtask_index = min(self.subtask_index + 1, self.task.num_subtasks - 1)

    # ----- privileged state (tasks' success logic, scripted experts) ----------------------------------
    @property
    def ee_pos(self) -> np.ndarray:
        return self.data.body("hand").xpos.copy()

    @property
    def ee_quat(self) -> np.ndarray:
        return canonical_quat(self.data.body("hand").xquat)

    @property
    def closedness(self) -> float:
        fingers = self.data.joint("finger_left").qpos[0] + self.data.joint("finger_right").qpos[0]
        return float(np.clip(fingers / (2 * scene.FINGER_TRAVEL), 0.0, 1.0))

    def body_pos(self, name: str) -> np.ndarray:
        return self.data.body(name).xpos.copy()

    def body_quat(self, name: str) -> np.ndarray:
        return self.data.body(name).xquat.copy()

    def drawer_qpos(self, row: str) -> float:
        return float(self.data.joint(f"drawer_{row}").qpos[0])

    def contact_bodies(self, body: str) -> set[str]:
        """Names of the bodies whose geoms touch `body`'s geoms now."""
        body_id, names = self.model.body(body).id, set()
        for contact in self.data.contact[: self.data.ncon]:
            b1, b2 = self.model.geom_bodyid[contact.geom1], self.model.geom_bodyid[contact.geom2]
            if body_id in (b1, b2):
                names.add(self.model.body(b2 if b1 == body_id else b1).name)
        return names

    def place_free_body(self, name: str, pos: np.ndarray, quat: np.ndarray = (1.0, 0.0, 0.0, 0.0)) -> None:
        joint = self.model.joint(name)
        self.data.qpos[joint.qposadr[0] : joint.qposadr[0] + 7] = np.concatenate([pos, quat])
        self.data.qvel[joint.dofadr[0] : joint.dofadr[0] + 6] = 0.0

    def set_drawer(self, row: str, qpos: float) -> None:
        self.data.joint(f"drawer_{row}").qpos[0] = qpos

    # ----- gymnasium --------------------------------------------------------------------------------
    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        rng = self.np_random
        mujoco.mj_resetData(self.model, self.data)
        self.subtask_index, self.elapsed_steps, self.gripper_command = 0, 0, 0.0
        self.episode += 1
        for i, name in enumerate(self.task.objects):  # parked off-stage unless the task places it
            self.place_free_body(name, np.array([2.0 + 0.3 * i, 2.0, 0.1]))
        self.task.reset(self, rng)
        start = self.task.gripper_start + rng.uniform(-0.03, 0.03, 3)
        self.data.qpos[self._hand_qpos : self._hand_qpos + 7] = np.concatenate([start, [1.0, 0, 0, 0]])
        self.data.mocap_pos[0], self.data.mocap_quat[0] = start, [1.0, 0, 0, 0]
        self._vary_visuals(rng)
        mujoco.mj_forward(self.model, self.data)
        mujoco.mj_step(self.model, self.data, nstep=60)  # let objects settle on their supports
        self.task.after_settle(self)
        self._needs_reset = False
        return self._observation(), {"success": False, "elapsed_steps": 0}

    def step(self, action):
        if self._needs_reset:
            raise EnvError(f"{self.task_name}: call reset() before step()")
        action = self._check_action(action)
        pos, quat = self.ee_pos, self.ee_quat
        low, high = WORKSPACE[self.task.layout]
        target_pos = np.clip(pos + action[:3], low, high)
        target_quat = quat_mul(axis_angle_to_quat(action[3:6]), quat)  # "ee_align": R' = R(Δ) · R
        self.gripper_command = float(np.clip(self.gripper_command + action[6], 0.0, 1.0))
        self.data.ctrl[:] = self.gripper_command * scene.FINGER_TRAVEL
        self._move_mocap(target_pos, target_quat)
        self.elapsed_steps += 1
        if self.task.num_subtasks > 1 and self.elapsed_steps == self.task.force_advance_at:
            self.advance_to_next_subtask()  # SIMPLER forces the next subtask at step 100
        success = bool(self.task.evaluate(self))
        truncated = self.elapsed_steps >= self.max_episode_steps
        info = {"success": success, "elapsed_steps": self.elapsed_steps}
        return self._observation(), float(success), False, truncated, info

    def _check_action(self, action) -> np.ndarray:
        a = np.asarray(action, dtype=np.float64)
        if a.shape != (7,):
            raise EnvError(
                f"{self.task_name}: action has shape {a.shape}; expected (7,) = translation (3) ‖ "
                "axis-angle rotation (3) ‖ relative gripper (1)"
            )
        if not np.all(np.isfinite(a)):
            raise EnvError(f"{self.task_name}: action {a.tolist()} contains NaN or inf")
        return np.clip(a, ACTION_LOW, ACTION_HIGH)

    def _move_mocap(self, target_pos: np.ndarray, target_quat: np.ndarray) -> None:
        start_pos = self.data.mocap_pos[0].copy()
        start_quat = canonical_quat(self.data.mocap_quat[0])
        if np.dot(start_quat, target_quat) < 0:
            target_quat = -target_quat
        for k in range(1, _MOVE_CHUNKS + 1):
            w = k / _MOVE_CHUNKS  # normalised lerp of quaternions: ≈ slerp for the small rotations of a step
            quat = (1 - w) * start_quat + w * target_quat
            self.data.mocap_pos[0] = (1 - w) * start_pos + w * target_pos
            self.data.mocap_quat[0] = quat / np.linalg.norm(quat)
            mujoco.mj_step(self.model, self.data, nstep=_CHUNK)
        mujoco.mj_step(self.model, self.data, nstep=SUBSTEPS - _MOVE_CHUNKS * _CHUNK)

    def _vary_visuals(self, rng: np.random.Generator) -> None:
        m = self.model
        m.geom_rgba[:] = self._defaults["geom_rgba"]
        m.light_diffuse[:], m.light_dir[:] = self._defaults["light_diffuse"], self._defaults["light_dir"]
        cam_pos, cam_target = np.array(scene.CAMERA_POS), np.array(scene.CAMERA_TARGETS[self.task.layout])
        if self.visual_variation:  # SIMPLER's "variant aggregation" in spirit (DESIGN.md §4)
            furniture = [
                g
                for g in ("table", "cabinet_top", "floor")
                if mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_GEOM, g) >= 0
            ]
            for name in furniture:
                m.geom(name).rgba[:3] = np.clip(m.geom(name).rgba[:3] + rng.uniform(-0.25, 0.25, 3), 0, 1)
            m.light_diffuse[0] = self._defaults["light_diffuse"][0] * rng.uniform(0.5, 1.5)
            direction = self._defaults["light_dir"][0] + np.append(rng.uniform(-0.4, 0.4, 2), 0)
            m.light_dir[0] = direction / np.linalg.norm(direction)
            cam_pos = cam_pos + rng.uniform(-0.03, 0.03, 3)
            cam_target = cam_target + rng.uniform(-0.02, 0.02, 3)
            for i in range(scene.N_DISTRACTORS):
                body = m.body(f"distractor_{i}")
                body.pos[:] = self.task.distractor_position(i, rng)
                m.geom(f"distractor_{i}").rgba[:3] = rng.uniform(0.1, 0.9, 3)
        xyaxes = look_at_xyaxes(cam_pos, cam_target)
        x_axis, y_axis = xyaxes[:3], xyaxes[3:]
        rot = np.stack([x_axis, y_axis, np.cross(x_axis, y_axis)], axis=1)  # camera axes as columns
        cam_quat = np.zeros(4)
        mujoco.mju_mat2Quat(cam_quat, rot.reshape(-1))
        m.cam("head").pos[:], m.cam("head").quat[:] = cam_pos, cam_quat

    def _observation(self) -> dict[str, np.ndarray]:
        proprio = np.concatenate([self.ee_pos, self.ee_quat, [self.closedness]]).astype(np.float32)
        return {"image": self.render_image(), "proprio": proprio}

    def render_image(self) -> np.ndarray:
        """(H, W, 3) uint8 from the head camera."""
        if self._renderer is None:
            problem = before_first_renderer()
            if problem is not None:
                raise EnvError(f"{self.task_name}: {problem}")
            try:
                self._renderer = mujoco.Renderer(self.model, self.height, self.width)
            except Exception as e:  # no usable GL context
                raise EnvError(
                    f"cannot create MuJoCo's offscreen renderer (MUJOCO_GL={os.environ.get('MUJOCO_GL')}):"
                    f" {e}; try MUJOCO_GL=egl or MUJOCO_GL=osmesa"
                ) from e
        self._renderer.update_scene(self.data, "head")
        return self._renderer.render().copy()

    def render(self) -> np.ndarray | None:
        return self.render_image() if self.render_mode == "rgb_array" else None

    def close(self) -> None:
        if self._renderer is not None:
            self._renderer.close()
            self._renderer = None


def prepare_rendering() -> None:
    """Initialise MuJoCo's renderer once in this process. Call it before importing TensorFlow in a process
    that will also render CPU-suite envs (e.g. collecting an RLDS dataset): see envs/_gl.py."""
    problem = before_first_renderer()
    if problem is not None:
        raise EnvError(problem)
    model = mujoco.MjModel.from_xml_string(
        '<mujoco><visual><global offwidth="8" offheight="8"/></visual><worldbody/></mujoco>'
    )
    mujoco.Renderer(model, 8, 8).close()
