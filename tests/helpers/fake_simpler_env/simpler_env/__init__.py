"""A stand-in for SimplerEnv's `simpler_env` package, with the API eval/worker.py's SimplerSuite uses.

`make(task, **kwargs)` builds an env whose constructor takes only the keywords upstream's does, so an
unknown one raises TypeError as ManiSkill2_real2sim's BaseEnv does. The agent has `base_pose` and the env a
`tcp` link whose poses are `Pose`s (sapien.Pose's p, q (w, x, y, z), inv(), *), as upstream. Put this folder
on PYTHONPATH to use it. Environment variables choose what the env lacks or breaks:
  FAKE_SIMPLER_PROPRIO  tcp (default: agent.base_pose and tcp, as upstream) | eef (also obs.agent.eef_pos,
                        as a fork) | none (neither)
  FAKE_SIMPLER_MISSING  comma-separated tasks whose scene stage (scene_root/stages/<scene_name>.glb) is
                        missing; upstream then only logs an error, as this fake does nothing
  FAKE_SIMPLER_STEP_ERROR_AT  step number at which step() raises
  FAKE_SIMPLER_STEP_SECONDS   seconds each step sleeps
  FAKE_SIMPLER_LOG      a file: each build (env id and keywords) and reset (seed, options) as a JSON line
`simpler_env.utils.env.env_builder.build_maniskill2_env(env_id, **kwargs)` builds the same env from an env id
and the keywords of SIMPLER's scripts; `mani_skill2_real2sim.ASSET_DIR` is the data folder beside this file.
"""

import json
import os
import time
from types import SimpleNamespace

import numpy as np

ENVIRONMENTS = [
    "google_robot_pick_coke_can",
    "google_robot_move_near",
    "google_robot_open_top_drawer",
    "google_robot_place_apple_in_closed_top_drawer",
]
# robot base and TCP (world frame) after reset: the base turned 90 degrees about z at (1, 2, 0.5); the TCP at
# (0.4, 0, 0.9) in the base frame, turned 60 degrees about the base's x, given with w < 0 (q and -q are one
# rotation): (-cos 30, -sin 30, 0, 0) in the base frame is this quaternion in the world frame
BASE_POSE = ([1.0, 2.0, 0.5], [0.70710678, 0.0, 0.0, 0.70710678])
TCP_POSE = ([1.0, 2.4, 1.4], [-0.61237244, -0.35355339, -0.35355339, -0.61237244])


def _qmul(a, b):
    w1, x1, y1, z1 = a
    w2, x2, y2, z2 = b
    return np.array([
        w1 * w2 - x1 * x2 - y1 * y2 - z1 * z2,
        w1 * x2 + x1 * w2 + y1 * z2 - z1 * y2,
        w1 * y2 - x1 * z2 + y1 * w2 + z1 * x2,
        w1 * z2 + x1 * y2 - y1 * x2 + z1 * w2,
    ])  # fmt: skip


def _rotate(q, v):
    return _qmul(_qmul(q, [0.0, *v]), [q[0], -q[1], -q[2], -q[3]])[1:]


class Pose:
    """sapien.core.Pose's part the worker uses: p, q (w, x, y, z), inv() and composition."""

    def __init__(self, p=(0.0, 0.0, 0.0), q=(1.0, 0.0, 0.0, 0.0)):
        self.p, self.q = np.asarray(p, np.float64), np.asarray(q, np.float64)

    def inv(self):
        q_inv = np.array([self.q[0], -self.q[1], -self.q[2], -self.q[3]])
        return Pose(-_rotate(q_inv, self.p), q_inv)

    def __mul__(self, other):
        return Pose(self.p + _rotate(self.q, other.p), _qmul(self.q, other.q))


class Agent:
    def __init__(self):
        self.base_pose = Pose(*BASE_POSE)
        self.closedness = 0.0

    def get_gripper_closedness(self):
        return self.closedness


# the fake's ManiSkill2_real2sim data folder: hab2_bench_assets/stages/*.glb, real_inpainting/*.png
DATA = os.path.join(os.path.dirname(__file__), "data")
# a few of the keywords of ManiSkill2_real2sim's envs (CustomSceneEnv, BaseEnv and the task envs)
KEYWORDS = {"obs_mode", "prepackaged_config", "render_config", "urdf_version", "robot", "control_mode",
            "control_freq", "sim_freq", "camera_cfgs", "max_episode_steps", "scene_name", "rgb_overlay_path",
            "rgb_overlay_cameras", "lr_switch", "upright", "laid_vertically", "distractor_config", "no_distractor",
            "slightly_darker_lighting", "slightly_brighter_lighting", "shader_dir", "station_name", "light_mode",
            "disable_bad_material", "model_ids"}  # fmt: skip


def _log(record):
    if os.environ.get("FAKE_SIMPLER_LOG"):
        with open(os.environ["FAKE_SIMPLER_LOG"], "a") as f:
            f.write(json.dumps(record) + "\n")


class BaseEnv:
    """Takes only upstream's keywords: another one is `TypeError: BaseEnv.__init__() got an unexpected
    keyword argument ...`, the error of issue 24."""

    def __init__(self, task, **kwargs):
        for key in kwargs:
            if key not in KEYWORDS:
                raise TypeError(f"BaseEnv.__init__() got an unexpected keyword argument '{key}'")
        _log({"build": task, "kwargs": kwargs})
        self.task, self.robot_uid = task, "google_robot_static"
        self.scene_root = os.path.join(DATA, "hab2_bench_assets")  # as CustomSceneEnv
        missing = task in os.environ.get("FAKE_SIMPLER_MISSING", "").split(",")
        self.scene_name = f"{task}_stage" if missing else kwargs.get("scene_name", "present_stage")
        steps = kwargs.get("max_episode_steps") or (200 if "apple" in task.lower() else 80)
        self.spec = SimpleNamespace(max_episode_steps=steps)
        self.proprio = os.environ.get("FAKE_SIMPLER_PROPRIO", "tcp")
        self.agent = Agent() if self.proprio != "none" else SimpleNamespace()
        self.tcp = SimpleNamespace(pose=Pose(*TCP_POSE)) if self.proprio != "none" else None
        agent_keys = {"qpos": None, "qvel": None, **({"eef_pos": None} if self.proprio == "eef" else {})}
        self.observation_space = SimpleNamespace(spaces={"agent": SimpleNamespace(spaces=agent_keys)})
        self.stage = 1

    @property
    def unwrapped(self):
        return self

    def close(self):
        pass

    def reset(self, seed=None, options=None):
        _log({"reset": seed, "options": _plain(options)})
        self.t, self.stage, self.rng = 0, 1, np.random.default_rng(seed)
        if self.proprio != "none":
            self.agent.closedness, self.tcp.pose = 0.0, Pose(*TCP_POSE)
        return self._obs(), {}

    def step(self, action):
        self.t += 1
        if self.t == int(os.environ.get("FAKE_SIMPLER_STEP_ERROR_AT", 0)):
            raise RuntimeError(f"physics exploded at step {self.t}")
        time.sleep(float(os.environ.get("FAKE_SIMPLER_STEP_SECONDS", 0)))
        action = np.asarray(action, np.float64)
        if self.proprio != "none":  # translation in the base frame; +1 closes the gripper
            base = self.agent.base_pose
            self.tcp.pose = Pose(self.tcp.pose.p + _rotate(base.q, action[:3]), self.tcp.pose.q)
            self.agent.closedness = float(np.clip(self.agent.closedness + 0.5 * action[6], 0.0, 1.0))
        truncated = self.t >= self.spec.max_episode_steps
        return self._obs(), 0.0, False, truncated, {"success": False}

    def get_language_instruction(self):
        if "apple" in self.task.lower():
            return "open top drawer" if self.stage == 1 else "place apple into top drawer"
        return self.task.removeprefix("google_robot_").replace("_", " ")

    def is_final_subtask(self):
        return "apple" not in self.task.lower() or self.stage == 2

    def advance_to_next_subtask(self):
        self.stage = 2

    def _obs(self):
        agent = {"qpos": np.zeros(11), "qvel": np.zeros(11)}
        if (
            self.proprio == "eef"
        ):  # x, y, z, qw, qx, qy, qz, openness: not the TCP's, to tell the sources apart
            agent["eef_pos"] = np.array([0.1, 0.2, 0.3, 1.0, 0.0, 0.0, 0.0, 1.0 - self.agent.closedness])
        image = np.full((8, 10, 3), self.t % 256, np.uint8)
        return {"agent": agent, "image": {"overhead_camera": {"rgb": image}}}


def _plain(value):
    """Options as JSON: arrays become lists, their type recorded (upstream takes numpy arrays)."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, np.ndarray):
        return {"ndarray": value.tolist()}
    return value


def make(task_name, **kwargs):
    assert task_name in ENVIRONMENTS, f"Task {task_name} is not supported. Environments: \n {ENVIRONMENTS}"
    return BaseEnv(task_name, obs_mode="rgbd", prepackaged_config=True, **kwargs)
